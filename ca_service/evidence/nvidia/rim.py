"""NVIDIA Reference Integrity Manifests: SWID tags (ISO/IEC 19770-2) signed with XML-DSig.

Steps for each RIM (as nvtrust's ``rim`` module does, TCG RIM Information Model 1.01 binding):

1. Parse the XML with lxml, no entities, no network. The signer's chain is the ``ds:X509Data`` of
   the signature: it must reach the pinned NVIDIA CoRIM signing Root CA and be valid at ``at``
   (``chain.py``).
2. XML-DSig (signxml): exactly one reference, enveloped, ECDSA-SHA384 / SHA-384 only, by the chain's
   leaf. Golden values are read from what signxml returns as signed, never from the input tree.
3. ``Meta/@colloquialVersion`` names the driver or VBIOS version; each ``Payload/Resource`` is one
   measurement: ``index`` (RIM numbering: SPDM block index - 1), ``active``, ``alternatives`` and
   ``Hash0..Hash{alternatives-1}``.

Verified RIMs are cached by the SHA-256 of their bytes (signxml costs ~1 ms a document); the chain
validity at ``at`` is re-checked every call.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from lxml import etree

from ca_service.errors import CollateralExpired, CollateralInvalid
from ca_service.evidence.nvidia.chain import Chain, build_chain

DS = "http://www.w3.org/2000/09/xmldsig#"
SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
_CACHE_SIZE = 256


@dataclass(frozen=True)
class GoldenMeasurement:
    index: int  # RIM index = SPDM block index - 1
    active: bool
    size: int
    values: tuple[bytes, ...]  # any of


@dataclass(frozen=True)
class Rim:
    sha256: str
    tag_id: str
    version: str  # Meta/@colloquialVersion
    product: str
    measurements: tuple[GoldenMeasurement, ...]
    chain: Chain

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "tag_id": self.tag_id, "version": self.version, "product": self.product,
                "signature_valid": True, "signer": self.chain.leaf.subject.rfc4514_string(),
                "signer_not_after": self.chain.leaf.not_valid_after_utc.isoformat()}


_LOCK = threading.Lock()
_RIMS: OrderedDict[str, Rim] = OrderedDict()


def clear_caches() -> None:
    with _LOCK:
        _RIMS.clear()


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=False)


def _signer_certificates(root: etree._Element) -> list[x509.Certificate]:
    out = []
    for el in root.iterfind(f"{{{DS}}}Signature/{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"):
        try:
            out.append(x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split()))))
        except Exception as exc:  # binascii.Error, ValueError, InvalidVersion: one family here
            raise CollateralInvalid("RIM signature carries a certificate that does not parse") from exc
    if not out:
        raise CollateralInvalid("RIM signature carries no X.509 certificate")
    return out


def _golden(signed: etree._Element) -> tuple[str, str, str, tuple[GoldenMeasurement, ...]]:
    meta = signed.find(f"{{{SWID}}}Meta")
    payload = signed.find(f"{{{SWID}}}Payload")
    if meta is None or payload is None:
        raise CollateralInvalid("RIM has no Meta or Payload element")
    version = meta.get("colloquialVersion") or ""
    out: list[GoldenMeasurement] = []
    seen: set[int] = set()
    for res in payload.iterfind(f"{{{SWID}}}Resource"):
        if res.get("type") != "Measurement":
            continue
        try:
            index, size, alts = int(res.get("index", "")), int(res.get("size", "")), int(res.get("alternatives", ""))
            active = {"True": True, "False": False}[res.get("active", "")]
            hashes = {etree.QName(k).localname: v for k, v in res.attrib.items()}
            values = tuple(bytes.fromhex(hashes[f"Hash{i}"]) for i in range(alts))
        except (KeyError, ValueError) as exc:
            raise CollateralInvalid("RIM measurement entry is malformed") from exc
        if index in seen or not 0 <= index < 256 or alts < 1 or any(len(v) != size for v in values):
            raise CollateralInvalid(f"RIM measurement {index} is repeated or inconsistent")
        seen.add(index)
        out.append(GoldenMeasurement(index, active, size, values))
    if not out:
        raise CollateralInvalid("RIM holds no measurements")
    return version, signed.get("tagId") or "", meta.get("product") or "", tuple(out)


def verify_rim(data: bytes, rim_pins: frozenset[str], at: datetime) -> Rim:
    """Steps 1-3 above, as of ``at``.

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): not a signed RIM, or its signature fails.
        RootUntrusted / ChainInvalid: its signer does not chain to the pinned RIM root.
        CollateralExpired (``evidence.collateral_expired``): a signer certificate is outside its window.
    """
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.exceptions import InvalidInput, InvalidSignature
    from signxml.verifier import SignatureConfiguration, XMLVerifier

    digest = hashlib.sha256(data).hexdigest()
    with _LOCK:
        cached = _RIMS.get(digest)
    if cached is not None:
        build_chain(cached.chain.certificates, rim_pins, at, "RIM signer", CollateralExpired)
        return cached
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise CollateralInvalid("RIM is not well-formed XML") from exc
    chain = build_chain(_signer_certificates(root), rim_pins, at, "RIM signer", CollateralExpired)
    config = SignatureConfiguration(
        expect_references=1,
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
        verification_time=at,
    )
    try:
        result = XMLVerifier().verify(data, x509_cert=chain.leaf, expect_config=config)
    except (InvalidSignature, InvalidInput) as exc:
        raise CollateralInvalid("RIM XML-DSig signature does not verify with its signer") from exc
    except Exception as exc:  # signxml/lxml raise many types on hostile input: one family here
        raise CollateralInvalid("RIM XML-DSig signature cannot be processed") from exc
    if isinstance(result, list):  # expect_references=1 gives one result; never trust more
        raise CollateralInvalid("RIM signature has more than one reference")
    signed = result.signed_xml
    if not isinstance(signed, etree._Element) or signed.tag != f"{{{SWID}}}SoftwareIdentity":
        raise CollateralInvalid("the signed part of the RIM is not its SoftwareIdentity")
    version, tag_id, product, golden = _golden(signed)
    rim = Rim(digest, tag_id, version, product, golden, chain)
    with _LOCK:
        _RIMS[digest] = rim
        while len(_RIMS) > _CACHE_SIZE:
            _RIMS.popitem(last=False)
    return rim
