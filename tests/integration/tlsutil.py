"""Certificates for the TLS tests, made with the real openssl command in a temporary directory:
a root CA, an intermediate CA and server certificates it signs (for 127.0.0.1 and localhost),
each server certificate written with its chain as --tls-cert wants it (the server's first).
Clients trust the root only, so a server that leaves the chain out fails their verification."""

import os
import ssl
import subprocess

OPENSSL = "/usr/bin/openssl"


def _run(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ext(cwd, name, text):
    path = os.path.join(cwd, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Pki:
    """A root and an intermediate CA in directory d; server() makes certificates."""

    def __init__(self, d):
        self.dir = d
        self.root = os.path.join(d, "root.pem")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _run("req", "-x509", *ec, "-keyout", "root.key", "-out", "root.pem", "-days", "3",
             "-subj", "/CN=wsluad test root", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        _run("req", "-new", *ec, "-keyout", "inter.key", "-out", "inter.csr",
             "-subj", "/CN=wsluad test intermediate", cwd=d)
        _ext(d, "inter.ext", "basicConstraints=critical,CA:TRUE,pathlen:0\n"
             "keyUsage=critical,keyCertSign,cRLSign\n")
        _run("x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "root.key",
             "-set_serial", "100", "-days", "3", "-extfile", "inter.ext", "-out", "inter.pem",
             cwd=d)
        _ext(d, "leaf.ext", "basicConstraints=critical,CA:FALSE\n"
             "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
             "subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def server(self, name, serial):
        """(cert, key) paths for a server certificate with that serial number; the cert file
        holds the certificate, then the intermediate."""
        d = self.dir
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=d)
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", "inter.pem", "-CAkey", "inter.key",
             "-set_serial", str(serial), "-days", "2", "-extfile", "leaf.ext",
             "-out", f"{name}.only.pem", cwd=d)
        cert = os.path.join(d, f"{name}.pem")
        with open(cert, "w") as out:
            for part in (f"{name}.only.pem", "inter.pem"):
                with open(os.path.join(d, part)) as f:
                    out.write(f.read())
        return cert, os.path.join(d, f"{name}.key")

    def client(self, alpn=None, version=None):
        """A client context that verifies against the root (hostname 127.0.0.1 included)."""
        ctx = ssl.create_default_context(cafile=self.root)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx


def self_signed(d, name="self", serial=1):
    """A self-signed pair made by one `openssl req -x509` (what README shows)."""
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-set_serial", str(serial), "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


def der(cert_path):
    """The DER bytes of the first certificate in a PEM file (the server's)."""
    with open(cert_path) as f:
        pem = f.read()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[:end] + "\n")


def client_hello():
    """The bytes of a real TLS ClientHello (Python's own, made without a socket)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
