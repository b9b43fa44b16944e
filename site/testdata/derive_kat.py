# Independent implementation of the site key construction (HKDF-SHA256 per
# RFC 5869 with Outpost's info encoding), used by TestDerivationKnownAnswer.
import hmac, hashlib, struct, sys
def hkdf(secret, n, purpose, epoch, ctx):
    info = b"outpost/v1" + struct.pack(">H", len(purpose)) + purpose + struct.pack(">I", epoch)
    for c in ctx:
        info += struct.pack(">H", len(c)) + c
    prk = hmac.new(b"outpost-hkdf-salt-v1", secret, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t; i += 1
    return out[:n]
master = bytes(range(32))
sk = hkdf(master, 32, b"scope-key", 2, [b"north"])
seed = hkdf(sk, 20, b"technician-seed", 0, [b"tech-042"])
print(sk.hex()); print(seed.hex())
