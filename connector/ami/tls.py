"""AMI over TLS: the client context, one line for each way a handshake fails, the peer's certificate.

Asterisk's TLS manager (`tlsenable=yes` in manager.conf, `tlsbindaddr`, port 5039 by default)
speaks the same AMI inside TLS. The certificate is verified against the system's CAs or
AMI_TLS_CA_FILE and its name against AMI_HOST; AMI_TLS_VERIFY=false turns both off (the caller
warns at every start). There is never a fall back to plain TCP: a failed handshake is an error.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WARN_DAYS = 30
# OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h) that mean "no CA we trust signed it".
_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH, _IP_MISMATCH = 10, 9, 62, 64
# OpenSSL reasons seen when the peer answers the ClientHello with something that is not TLS
# (a plain AMI port sends its banner, "Asterisk Call Manager/...", which is no TLS record).
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
    }
)
NOT_TLS = "did not answer TLS; Asterisk's TLS port is tlsbindaddr's, 5039 by default"


def client_context(ca_file: Path | None, verify: bool) -> ssl.SSLContext:
    """The context for AMI: verified against `ca_file` (or the system's CAs) unless `verify` is off.

    Raises OSError or ssl.SSLError when `ca_file` cannot be read as PEM certificates.
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def handshake_problem(error: BaseException, host: str, ca_file: Path | None) -> str:
    """One line saying why the TLS handshake with AMI failed and what to change."""
    trusted = f"AMI_TLS_CA_FILE ({ca_file})" if ca_file else "the system's CAs (set AMI_TLS_CA_FILE)"
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code in _UNKNOWN_CA_CODES:
            return f"AMI's TLS certificate is signed by a CA not in {trusted}: {error.verify_message}"
        if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
            return (
                f"AMI's TLS certificate is not valid for AMI_HOST {host!r} ({error.verify_message}): "
                "set AMI_HOST to a name the certificate carries, or reissue the certificate"
            )
        if code == _EXPIRED:
            return "AMI's TLS certificate has expired: renew Asterisk's tlscertfile"
        if code == _NOT_YET_VALID:
            return "AMI's TLS certificate is not valid yet: check the clocks, or reissue it"
        return f"AMI's TLS certificate was refused: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        if error.reason in _NOT_TLS_REASONS:
            return NOT_TLS
        return f"TLS handshake with AMI failed: {error.reason or error}"
    if isinstance(error, TimeoutError):
        return NOT_TLS
    return f"AMI closed the connection during the TLS handshake ({error or type(error).__name__})"


@dataclass(frozen=True)
class TlsState:
    """What `connector check` shows of an AMI TLS session."""

    protocol: str
    cipher: str
    verified: bool
    subject: str = ""
    issuer: str = ""
    not_after: float | None = None  # epoch seconds

    def days_left(self, now: float | None = None) -> float | None:
        """Days until the certificate expires (None when it was not verified, so not decoded)."""
        if self.not_after is None:
            return None
        return (self.not_after - (time.time() if now is None else now)) / 86400


def _name(parts: Any) -> str:
    # getpeercert() gives ((('commonName', 'pbx'),), (('organizationName', 'X'),)).
    return ", ".join(f"{key}={value}" for rdn in parts or () for key, value in rdn)


def tls_state(ssl_object: ssl.SSLObject | None) -> TlsState | None:
    """Describe the session from its SSLObject (None for plain TCP)."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    # Only a verified certificate is decoded by the ssl module (an unverified one is DER bytes).
    cert = ssl_object.getpeercert() or {}
    not_after = cert.get("notAfter")
    return TlsState(
        protocol=ssl_object.version() or "TLS",
        cipher=cipher[0] if cipher else "",
        verified=bool(cert),
        subject=_name(cert.get("subject")),
        issuer=_name(cert.get("issuer")),
        not_after=ssl.cert_time_to_seconds(not_after) if isinstance(not_after, str) else None,
    )
