import Foundation
import HearthCore
import HearthStorage
import Synchronization

/// What the server needs to assess itself (`GET /api/v1/assessment`): the assessor over its data
/// folder and store, the signer, its own ``ServingRecord`` once its listeners are up, and where the
/// maker's statements are.
public final class AssessmentService: Sendable {
    let assessor: Assessor
    let signer: DeploymentSigner
    let folder: DataFolder
    let storage: String
    private let record = Mutex<ServingRecord?>(nil)

    public init(folder: DataFolder, store: any HearthStore & UpdateStore, storage: String) throws {
        assessor = Assessor(folder: folder, store: store)
        signer = try DeploymentSigner.assessments(kek: folder.kek)
        self.folder = folder
        self.storage = storage
    }

    /// The server's declaration, once every listener is up: kept for the API and written to
    /// `DATA/serving.json` for `hearth assess`.
    public func serving(_ serving: ServingRecord) throws {
        record.withLock { $0 = serving }
        try serving.write(to: folder.url)
    }

    /// Removes `DATA/serving.json` (the server is stopping).
    public func stopped() {
        record.withLock { $0 = nil }
        ServingRecord.remove(from: folder.url)
    }

    /// The signed assessment: `{"assessment": …, "signature": base64 DER ECDSA-SHA256 over its
    /// canonical JSON text}`.
    public func signedAssessment(model: String?) async throws -> JSONValue {
        let id = try model.map { try ProductModelID($0) }
        let assessment = try await assessor.assess(
            serving: record.withLock { $0 }, storage: storage, model: id,
            statements: try MakerStatements.load(folder: folder.url))
        return try signer.sign(assessment.json)
    }

    public var publicKeyPEM: String { signer.publicKeyPEM }
}

extension Hearth {
    /// The operator's assessment of this deployment (EN 303 645 ICS, IXIT, PSTI statements, gaps).
    public func assessment(model: String?, by identity: Identity) async throws -> JSONValue {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        guard let service = assessments.withLock({ $0 }) else {
            throw HearthError(.unavailable, "this process assesses no deployment")
        }
        return try await service.signedAssessment(model: model)
    }

    /// The public key assessments are signed with, if this process makes them.
    public var assessmentPublicKeyPEM: String? { assessments.withLock { $0 }?.publicKeyPEM }

    public func attach(assessments service: AssessmentService) { assessments.withLock { $0 = service } }
}
