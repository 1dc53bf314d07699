"""The certificate extensions that link a loader's certificate to its CVM's (PURE).

Two non-critical extensions, both over the CVM certificate this CA issued for the same TEE instance:

- ``id-pe-relatedCert`` (RFC 9763, 1.3.6.1.5.5.7.1.36)::

      RelatedCertificate ::= SEQUENCE { hashAlgorithm DigestAlgorithmIdentifier, hashValue OCTET STRING }

  with SHA-256 over the CVM certificate's DER: the standard way to say "issued in relation to that
  certificate", which a tool can check without knowing this CA.
- ``ca-service-cvm-certificate`` (``2.25.<UUID>``, an ITU-T X.667 OID that needs no registration)::

      CvmCertificate ::= SEQUENCE { serialNumber CertificateSerialNumber, certHash OCTET STRING }

  carrying the CVM certificate's serial, so a relying party can look it up (``GET
  /v1/certificates/{serial}``, OCSP) and check its revocation, and the same SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, univ

ID_PE_RELATED_CERT = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.36")
# uuid 7f3c5d2e-8b1a-4c6e-9d40-5a2b1e7c9f13 as an integer (ITU-T X.667 / RFC 4122 section 4 "2.25")
ID_CA_SERVICE_CVM_CERT = x509.ObjectIdentifier("2.25.169125383227835230154806929748827873043")
ID_SHA256 = univ.ObjectIdentifier("2.16.840.1.101.3.4.2.1")


class _AlgorithmIdentifier(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("algorithm", univ.ObjectIdentifier()),
        namedtype.OptionalNamedType("parameters", univ.Any()),
    )


class _RelatedCertificate(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("hashAlgorithm", _AlgorithmIdentifier()),
        namedtype.NamedType("hashValue", univ.OctetString()),
    )


class _CvmCertificate(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("serialNumber", univ.Integer()),
        namedtype.NamedType("certHash", univ.OctetString()),
    )


@dataclass(frozen=True)
class CvmReference:
    """The CVM certificate a loader certificate names: serial (lower-case hex) and SHA-256 of its DER."""

    serial: str
    sha256: str


def encode_extensions(ref: CvmReference) -> list[x509.UnrecognizedExtension]:
    """Both extensions for ``ref`` (add them non-critical)."""
    digest = bytes.fromhex(ref.sha256)
    alg = _AlgorithmIdentifier()
    alg["algorithm"] = ID_SHA256
    related = _RelatedCertificate()
    related["hashAlgorithm"] = alg
    related["hashValue"] = digest
    cvm = _CvmCertificate()
    cvm["serialNumber"] = int(ref.serial, 16)
    cvm["certHash"] = digest
    return [x509.UnrecognizedExtension(ID_PE_RELATED_CERT, encoder.encode(related)),
            x509.UnrecognizedExtension(ID_CA_SERVICE_CVM_CERT, encoder.encode(cvm))]


def cvm_reference(cert: x509.Certificate) -> CvmReference | None:
    """The CVM certificate ``cert`` names, or None for a certificate that is not a loader's.

    Raises:
        ValueError: the extension is present but not a DER ``CvmCertificate``, or the RFC 9763
            extension disagrees with it.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(ID_CA_SERVICE_CVM_CERT).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise ValueError("unexpected parsing of the cvm-certificate extension")
    try:
        value, rest = decoder.decode(ext.value, asn1Spec=_CvmCertificate())
        if rest:
            raise ValueError("trailing bytes after CvmCertificate")
        ref = CvmReference(format(int(value["serialNumber"]), "x"), bytes(value["certHash"]).hex())
        related_ext = cert.extensions.get_extension_for_oid(ID_PE_RELATED_CERT).value
        if not isinstance(related_ext, x509.UnrecognizedExtension):
            raise ValueError("unexpected parsing of the relatedCert extension")
        related, rest = decoder.decode(related_ext.value, asn1Spec=_RelatedCertificate())
    except (PyAsn1Error, x509.ExtensionNotFound) as exc:
        raise ValueError("the loader link extensions are malformed or incomplete") from exc
    if rest or related["hashAlgorithm"]["algorithm"] != ID_SHA256 or bytes(related["hashValue"]).hex() != ref.sha256:
        raise ValueError("the RFC 9763 relatedCert extension disagrees with the cvm-certificate extension")
    return ref
