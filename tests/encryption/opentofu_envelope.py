#!/usr/bin/env python3
"""A second, independent implementation of OpenTofu's state encryption envelope (pbkdf2 key
provider + aes_gcm method), written from OpenTofu's format (internal/encryption) with Python's
`cryptography` package. The test suite uses it to check s3state's envelopes both ways.

  opentofu_envelope.py encrypt [--iterations N] [--hash sha512] [--key-length 32]
                               [--salt-length 32] [--meta-key key_provider.pbkdf2.key]
  opentofu_envelope.py decrypt [--meta-key key_provider.pbkdf2.key]

The state (encrypt) or the envelope (decrypt) is read from stdin, the result written to
stdout. The passphrase is read from the environment variable OPENTOFU_PASSPHRASE, never from
the command line.
"""
import argparse
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HASHES = {"sha256": hashes.SHA256, "sha512": hashes.SHA512}


def derive(passphrase, salt, iterations, hash_name, key_length):
    kdf = PBKDF2HMAC(algorithm=HASHES[hash_name](), length=key_length, salt=salt,
                     iterations=iterations)
    return kdf.derive(passphrase)


def encrypt(args, passphrase, plaintext):
    state = json.loads(plaintext)
    salt = os.urandom(args.salt_length)
    key = derive(passphrase, salt, args.iterations, args.hash, args.key_length)
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, plaintext, None)
    meta = {"salt": base64.b64encode(salt).decode(), "iterations": args.iterations,
            "hash_function": args.hash, "key_length": args.key_length}
    envelope = {
        "serial": state.get("serial"),
        "lineage": state.get("lineage", ""),
        "meta": {args.meta_key: base64.b64encode(json.dumps(meta).encode()).decode()},
        "encrypted_data": base64.b64encode(sealed).decode(),
        "encryption_version": "v0",
    }
    return json.dumps(envelope).encode()


def decrypt(args, passphrase, data):
    envelope = json.loads(data)
    if envelope.get("encryption_version") != "v0":
        raise SystemExit("not a v0 envelope")
    meta = json.loads(base64.b64decode(envelope["meta"][args.meta_key]))
    key = derive(passphrase, base64.b64decode(meta["salt"]), meta["iterations"],
                 meta["hash_function"], meta["key_length"])
    sealed = base64.b64decode(envelope["encrypted_data"])
    plaintext = AESGCM(key).decrypt(sealed[:12], sealed[12:], None)
    state = json.loads(plaintext)
    if envelope.get("serial") is not None and state.get("serial") != envelope["serial"]:
        raise SystemExit("serial mismatch")
    if envelope.get("lineage") and state.get("lineage") != envelope["lineage"]:
        raise SystemExit("lineage mismatch")
    return plaintext


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["encrypt", "decrypt"])
    parser.add_argument("--iterations", type=int, default=600000)
    parser.add_argument("--hash", default="sha512", choices=sorted(HASHES))
    parser.add_argument("--key-length", type=int, default=32)
    parser.add_argument("--salt-length", type=int, default=32)
    parser.add_argument("--meta-key", default="key_provider.pbkdf2.key")
    args = parser.parse_args()
    passphrase = os.environ["OPENTOFU_PASSPHRASE"].encode()
    data = sys.stdin.buffer.read()
    out = encrypt(args, passphrase, data) if args.action == "encrypt" else decrypt(args, passphrase, data)
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
