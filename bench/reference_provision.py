"""Reference for provisioning throughput: per unit, a P-256 key, a certificate signed by a CA key,
and an scrypt hash of a 10-digit code with Hearth's parameters, on 2 processes."""
import datetime, hashlib, os, secrets, sys, time
from multiprocessing import Pool
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reference Device CA")])

def unit(_):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(6))]))
            .issuer_name(CA_NAME).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=7300))
            .sign(CA_KEY, hashes.SHA256()))
    code = "".join(secrets.choice("0123456789") for _ in range(10))
    hashlib.scrypt(code.encode(), salt=os.urandom(16), n=1 << 16, r=8, p=1, maxmem=80 * 1024 * 1024, dklen=32)
    return cert.serial_number

if __name__ == "__main__":
    n = int(sys.argv[1])
    start = time.time()
    with Pool(2) as pool:
        pool.map(unit, range(n), chunksize=8)
    s = time.time() - start
    print(f"reference provisioned {n} units in {s:.1f} s ({n / s:.1f} units/s)")
