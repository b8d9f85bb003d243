internal import CNIOBoringSSL
import NIOCore
import NIOSSL
import NIOTLS

/// Why a mutual-TLS context could not be made or a connection failed.
public enum MutualTLSError: Error, CustomStringConvertible, Equatable {
    /// The certificate, key or CA could not be read, or BoringSSL refused a setting.
    case setup(String)
    /// The handshake failed (an alert sent or received, a certificate not from the CA).
    case handshake(String)
    /// A record could not be decrypted or the peer broke the protocol after the handshake.
    case protocolError(String)

    public var description: String {
        switch self {
        case .setup(let why): "TLS set-up failed: \(why)"
        case .handshake(let why): "TLS handshake failed: \(why)"
        case .protocolError(let why): "TLS error: \(why)"
        }
    }
}

/// The device listener's TLS: ``TLSPolicy``'s versions, suites and groups, the server's chain and
/// key, and a certificate from the device CA required of every client (Code of Practice guideline
/// 5; EN 303 645 5.5-1).
///
/// BoringSSL directly (the library NIOSSL wraps), for the one listener that holds tens of
/// thousands of mostly idle connections: ``MutualTLSServerHandler`` keeps no buffer between
/// records, where NIOSSL's handler keeps 48 KiB of buffers and a 96-entry write queue for the
/// connection's life (ARCHITECTURE decision 96). No session resumption: every connect proves
/// possession of the device key and is checked against the device's record.
public final class MutualTLSServerContext: @unchecked Sendable {
    // Sendable: the SSL_CTX is configured in `init` and only read afterwards (SSL_new), which
    // BoringSSL allows from any thread.
    let context: OpaquePointer

    public init(certificateChainPEM: String, privateKeyPEM: String, clientCAPEM: String) throws {
        guard let context = SSL_CTX_new(TLS_method()) else { throw MutualTLSError.setup("no memory for a context") }
        self.context = context
        let minimum = TLSPolicy.minimumVersion == .tlsv13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard SSL_CTX_set_min_proto_version(context, UInt16(minimum)) == 1,
            SSL_CTX_set_max_proto_version(context, UInt16(TLS1_3_VERSION)) == 1,
            SSL_CTX_set_strict_cipher_list(context, TLSPolicy.cipherSuites) == 1
        else { throw MutualTLSError.setup(Self.lastError()) }
        let groups = TLSPolicy.curves.map(\.rawValue)
        guard groups.withUnsafeBufferPointer({ SSL_CTX_set1_group_ids(context, $0.baseAddress, $0.count) }) == 1 else {
            throw MutualTLSError.setup(Self.lastError())
        }

        let chain = try Self.certificates(certificateChainPEM, what: "server certificate")
        defer { for certificate in chain { X509_free(certificate) } }
        guard SSL_CTX_use_certificate(context, chain[0]) == 1 else { throw MutualTLSError.setup(Self.lastError()) }
        for intermediate in chain.dropFirst() where SSL_CTX_add1_chain_cert(context, intermediate) != 1 {
            throw MutualTLSError.setup(Self.lastError())
        }
        let key = try Self.withBIO(privateKeyPEM) { PEM_read_bio_PrivateKey($0, nil, nil, nil) }
        guard let key else { throw MutualTLSError.setup("the server key is not a PEM private key") }
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(context, key) == 1, SSL_CTX_check_private_key(context) == 1 else {
            throw MutualTLSError.setup("the server key does not match its certificate")
        }

        let authorities = try Self.certificates(clientCAPEM, what: "device CA")
        defer { for authority in authorities { X509_free(authority) } }
        let store = SSL_CTX_get_cert_store(context)
        for authority in authorities {
            // The CA's name goes into the CertificateRequest, as clients choose their certificate by it.
            guard X509_STORE_add_cert(store, authority) == 1, SSL_CTX_add_client_CA(context, authority) == 1 else {
                throw MutualTLSError.setup(Self.lastError())
            }
        }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(context), UInt(X509_V_FLAG_TRUSTED_FIRST))
        SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF)
        SSL_CTX_set_options(context, UInt32(SSL_OP_NO_TICKET))
    }

    deinit { SSL_CTX_free(context) }

    /// Every certificate in `pem`, at least one.
    private static func certificates(_ pem: String, what: String) throws -> [OpaquePointer] {
        try withBIO(pem) { bio in
            var found: [OpaquePointer] = []
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) { found.append(certificate) }
            ERR_clear_error()  // the loop ends on "no start line"
            guard !found.isEmpty else { throw MutualTLSError.setup("no certificate in the \(what) PEM") }
            return found
        }
    }

    private static func withBIO<T>(_ text: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, raw.count) else {
                throw MutualTLSError.setup("no memory for a BIO")
            }
            defer { BIO_free(bio) }
            return try body(bio)
        }
    }

    /// BoringSSL's reasons for the last failure on this thread, and the queue cleared.
    static func lastError() -> String {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            guard code != 0 else { break }
            reasons.append(ERR_reason_error_string(code).map { String(cString: $0) } ?? "error \(code)")
        }
        return reasons.isEmpty ? "unknown" : reasons.joined(separator: "; ")
    }
}

/// The server side of one mutual-TLS connection, below the MQTT handler: ciphertext in and out,
/// plaintext up and down, `TLSUserEvent.handshakeCompleted` when the client's certificate chains
/// to the device CA (the client's leaf certificate is then ``peerCertificateDER``).
///
/// Nothing is buffered while the connection is idle: ciphertext BoringSSL has not taken lives in
/// the read that brought it, plaintext in a buffer made for the read, and ciphertext to send in a
/// buffer made by the first write after a flush and handed to the socket at the flush. Closing
/// sends close_notify and closes the socket at once: the peer's answer is not awaited, so a peer
/// that never reads cannot hold the connection open. Errors are fired (``MutualTLSError``) and
/// close the connection.
public final class MutualTLSServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State { case idle, handshaking, active, closed }

    private let tls: MutualTLSServerContext
    private var ssl: OpaquePointer?
    private var state = State.idle
    /// Ciphertext received and not yet taken by BoringSSL (normally none after a read).
    private var received: ByteBuffer?
    /// Ciphertext written by BoringSSL since the last flush.
    private var toSend: ByteBuffer?
    private var toSendPromises: [EventLoopPromise<Void>] = []
    /// Writes made before the handshake completed (none in Hearth: MQTT starts after it).
    private var early: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    /// The client's certificate (DER) once the handshake completed.
    public private(set) var peerCertificateDER: [UInt8]?

    public init(context: MutualTLSServerContext) { self.tls = context }

    /// Bytes of buffers this handler holds (none while the connection is idle).
    var heldCapacity: Int {
        (received?.capacity ?? 0) + (toSend?.capacity ?? 0) + early.reduce(0) { $0 + $1.0.capacity }
    }

    deinit { if let ssl { SSL_free(ssl) } }

    // MARK: Inbound

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { begin() }
    }

    public func handlerRemoved(context: ChannelHandlerContext) { end(context: context, failing: ChannelError.eof) }

    public func channelActive(context: ChannelHandlerContext) {
        begin()
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        end(context: context, failing: ChannelError.eof)
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard state == .handshaking || state == .active else { return }
        if received == nil { received = bytes } else { received!.writeBuffer(&bytes) }
        if state == .handshaking { handshake(context: context) }
        if state == .active { decrypt(context: context) }
        if received?.readableBytes == 0 { received = nil }
    }

    private func begin() {
        guard state == .idle, let ssl = SSL_new(tls.context) else { return }
        self.ssl = ssl
        SSL_set_accept_state(ssl)
        let bio = BIO_new(Self.method)
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(bio, 1)
        SSL_set_bio(ssl, bio, bio)  // the SSL owns the one reference
        state = .handshaking
    }

    private func handshake(context: ChannelHandlerContext) {
        guard let ssl else { return }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            state = .active
            if let chain = SSL_get0_peer_certificates(ssl), let leaf = sk_CRYPTO_BUFFER_value(chain, 0) {
                peerCertificateDER = Array(
                    UnsafeBufferPointer(start: CRYPTO_BUFFER_data(leaf), count: CRYPTO_BUFFER_len(leaf)))
            }
            sendCiphertext(context: context)
            context.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
            let early = self.early
            self.early = []
            for (bytes, promise) in early { write(context: context, data: wrapOutboundOut(bytes), promise: promise) }
            if !early.isEmpty { flush(context: context) }
            return
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ:
            sendCiphertext(context: context)
        default:
            var why = MutualTLSServerContext.lastError()
            let verification = SSL_get_verify_result(ssl)
            if verification != X509_V_OK, let text = X509_verify_cert_error_string(Int(verification)) {
                why = "\(String(cString: text)) (\(why))"
            }
            fail(context: context, MutualTLSError.handshake(why))
        }
    }

    /// Decrypts every complete record received, passes the plaintext on in one read.
    private func decrypt(context: ChannelHandlerContext) {
        guard let ssl else { return }
        let expected = min(max(received?.readableBytes ?? 0, 256), 16_384)
        var plaintext = context.channel.allocator.buffer(capacity: expected)
        var ended: MutualTLSError?
        var peerClosed = false
        while true {
            ERR_clear_error()
            var result: CInt = 0
            plaintext.writeWithUnsafeMutableBytes(minimumWritableBytes: 256) { space in
                result = SSL_read(ssl, space.baseAddress, CInt(clamping: space.count))
                return Int(max(result, 0))
            }
            if result > 0 { continue }
            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ: break
            case SSL_ERROR_ZERO_RETURN: peerClosed = true
            default: ended = .protocolError(MutualTLSServerContext.lastError())
            }
            break
        }
        // A key update or an alert may have to be answered.
        sendCiphertext(context: context)
        if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
        if let ended {
            fail(context: context, ended)
        } else if peerClosed {
            close(context: context, mode: .all, promise: nil)
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: MutualTLSError) {
        sendCiphertext(context: context)  // the alert, when there is one
        state = .closed
        received = nil
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    /// The connection is over: the SSL freed, waiting writes failed.
    private func end(context: ChannelHandlerContext, failing error: any Error) {
        state = .closed
        received = nil
        toSend = nil
        let promises = toSendPromises + early.compactMap(\.1)
        toSendPromises = []
        early = []
        for promise in promises { promise.fail(error) }
        if let ssl { SSL_free(ssl) }
        ssl = nil
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = unwrapOutboundIn(data)
        switch state {
        case .idle, .handshaking:
            early.append((bytes, promise))
            return
        case .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        case .active:
            break
        }
        guard let ssl else { return }
        while bytes.readableBytes > 0 {
            ERR_clear_error()
            let written = bytes.withUnsafeReadableBytes { SSL_write(ssl, $0.baseAddress, CInt(clamping: $0.count)) }
            guard written > 0 else {
                let error = MutualTLSError.protocolError(MutualTLSServerContext.lastError())
                promise?.fail(error)
                return fail(context: context, error)
            }
            bytes.moveReaderIndex(forwardBy: Int(written))
        }
        if let promise { toSendPromises.append(promise) }
    }

    public func flush(context: ChannelHandlerContext) {
        sendCiphertext(context: context)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode != .input, state == .active, let ssl {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)  // close_notify; the peer's is not awaited
            ERR_clear_error()
            sendCiphertext(context: context)
        }
        if mode == .all { state = .closed }
        context.close(mode: mode, promise: promise)
    }

    /// Hands the ciphertext written since the last flush to the socket.
    private func sendCiphertext(context: ChannelHandlerContext) {
        guard let bytes = toSend else {
            let promises = toSendPromises
            toSendPromises = []
            for promise in promises { promise.succeed() }
            return
        }
        toSend = nil
        var promise: EventLoopPromise<Void>?
        switch toSendPromises.count {
        case 0: break
        case 1: promise = toSendPromises[0]
        default:
            let all = context.eventLoop.makePromise(of: Void.self)
            for each in toSendPromises { all.futureResult.cascade(to: each) }
            promise = all
        }
        toSendPromises = []
        context.writeAndFlush(wrapOutboundOut(bytes), promise: promise)
    }

    // MARK: The BIO between BoringSSL and this handler

    fileprivate func bioRead(_ into: UnsafeMutableRawBufferPointer) -> CInt {
        guard var bytes = received, bytes.readableBytes > 0 else { return -1 }
        let count = min(into.count, bytes.readableBytes)
        bytes.withUnsafeReadableBytes { into.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
        bytes.moveReaderIndex(forwardBy: count)
        received = bytes.readableBytes > 0 ? bytes : nil
        return CInt(count)
    }

    fileprivate func bioWrite(_ from: UnsafeRawBufferPointer) -> CInt {
        if toSend == nil { toSend = ByteBufferAllocator().buffer(capacity: max(from.count, 512)) }
        toSend!.writeBytes(from)
        return CInt(from.count)
    }

    nonisolated(unsafe) private static let method: OpaquePointer = {
        let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "Hearth mutual TLS")!
        BIO_meth_set_read(method) { bio, buffer, length in
            BIO_clear_retry_flags(bio)
            guard let bio, let buffer, length > 0, let owner = BIO_get_data(bio) else { return 0 }
            let handler = Unmanaged<MutualTLSServerHandler>.fromOpaque(owner).takeUnretainedValue()
            let count = handler.bioRead(UnsafeMutableRawBufferPointer(start: buffer, count: Int(length)))
            if count < 0 { BIO_set_retry_read(bio) }
            return count
        }
        BIO_meth_set_write(method) { bio, buffer, length in
            BIO_clear_retry_flags(bio)
            guard let bio, let buffer, length > 0, let owner = BIO_get_data(bio) else { return 0 }
            let handler = Unmanaged<MutualTLSServerHandler>.fromOpaque(owner).takeUnretainedValue()
            return handler.bioWrite(UnsafeRawBufferPointer(start: buffer, count: Int(length)))
        }
        BIO_meth_set_ctrl(method) { _, command, _, _ in command == BIO_CTRL_FLUSH ? 1 : 0 }
        BIO_meth_set_create(method) { _ in 1 }
        BIO_meth_set_destroy(method) { _ in 1 }
        return method
    }()
}
