"""PKCS#11 keys through python-pkcs11, presented as cryptography private keys.

python-pkcs11 initialises the module without ``CKF_OS_LOCKING_OK`` and SoftHSM crashes
under concurrent calls, so every call into one token is serialised by one lock per
(module, token) in this process; throughput scales with processes, each with its own
login (see shared notes hsm-and-tpm.md). Keys are generated on the token with
``CKA_SENSITIVE=true`` and ``CKA_EXTRACTABLE=false``.

Recovery: a PKCS#11 error that means the token, session or handles are gone (:data:`TOKEN_FAULTS`,
not errors about one operation's input such as a bad ciphertext) drops the session and every
cached object handle (a token that went away and came back hands out new handles: the old ones
fail with ``ObjectHandleInvalid`` forever).
The next call re-opens the session and logs in again, at most once per backoff interval (0.5 s,
doubling to 10 s while it keeps failing), and is retried once right away after a successful
re-open. A re-open after a failure first re-initialises the module (``C_Finalize`` +
``C_Initialize``): SoftHSM answers ``GeneralError`` to every ``C_OpenSession`` on a token whose
directory vanished and came back until it is re-initialised.
:attr:`Pkcs11Token.failing_since` tells liveness checks how long the token has been unusable.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from ca.errors import ErrorKind, PKIError
from ca.keys.pin import Pin
from ca.keys.signer import KeySpec, SigningKey
from ca.keys.uri import Pkcs11Uri, build

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
_CURVE_NAMES = {"P-256": "secp256r1", "P-384": "secp384r1"}
_HASH_MECH = {
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA256_RSA_PKCS_PSS),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384, Mechanism.SHA384_RSA_PKCS, Mechanism.SHA384_RSA_PKCS_PSS),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512, Mechanism.SHA512_RSA_PKCS, Mechanism.SHA512_RSA_PKCS_PSS),
    "sha1": (Mechanism.SHA_1, pkcs11.MGF.SHA1, Mechanism.SHA1_RSA_PKCS, Mechanism.SHA1_RSA_PKCS_PSS),
}

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
# errors after which the session or the module must be re-opened (the token went away, handles are stale)
TOKEN_FAULTS: tuple[type[Exception], ...] = (
    pkcs11.exceptions.DeviceError, pkcs11.exceptions.DeviceMemory, pkcs11.exceptions.DeviceRemoved,
    pkcs11.exceptions.FunctionFailed, pkcs11.exceptions.GeneralError, pkcs11.exceptions.KeyHandleInvalid,
    pkcs11.exceptions.ObjectHandleInvalid, pkcs11.exceptions.OperationActive, pkcs11.exceptions.SessionClosed,
    pkcs11.exceptions.SessionCount, pkcs11.exceptions.SessionHandleInvalid, pkcs11.exceptions.SlotIDInvalid,
    pkcs11.exceptions.TokenNotPresent, pkcs11.exceptions.TokenNotRecognised, pkcs11.exceptions.UserNotLoggedIn,
    pkcs11.exceptions.NoSuchKey,
)
# also what SoftHSM answers for a bad ciphertext: a fault only if the token then fails a probe too
AMBIGUOUS: tuple[type[Exception], ...] = (pkcs11.exceptions.GeneralError, pkcs11.exceptions.FunctionFailed,
                                          pkcs11.exceptions.DeviceError)
_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()


_generations: dict[str, int] = {}  # per module: bumped by each re-initialisation


def _reinitialize(module_path: str) -> int:
    """C_Finalize + C_Initialize: every session of every token of this module becomes invalid."""
    lib = _load_lib(module_path)
    with _libs_lock:
        try:
            lib.reinitialize()
        except (RuntimeError, pkcs11.PKCS11Error) as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"cannot re-initialise PKCS#11 module {module_path}: {exc!r}") \
                from None
        _generations[module_path] = _generations.get(module_path, 0) + 1
        return _generations[module_path]


def rescan(module_path: str) -> None:
    """Re-initialise a loaded module so it reads its tokens again (SoftHSM reads its token directory
    at C_Initialize: a token another process was writing then is missing until it re-reads). Only
    where nothing else of this process uses the module yet (opening a deployment at start-up)."""
    if module_path in _libs:
        with contextlib.suppress(PKIError):
            _reinitialize(module_path)


def _load_lib(module_path: str) -> Any:
    with _libs_lock:
        if module_path not in _libs:
            try:
                _libs[module_path] = pkcs11.lib(module_path)
            except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
                raise PKIError(ErrorKind.UNAVAILABLE, f"cannot load PKCS#11 module {module_path}: {exc}") from None
        return _libs[module_path]


@dataclass(frozen=True)
class KeyProtection:
    """What the token itself reports about a private key."""

    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool

    @property
    def non_extractable(self) -> bool:
        return self.sensitive and not self.extractable and self.never_extractable


class Pkcs11Token:
    """One logged-in session to one token, with every call serialised by a lock."""

    def __init__(self, module_path: str, token_label: str, pin: Pin) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self._pin = pin
        self._lock = threading.RLock()
        self._session: Any = None
        self._pid = -1
        self._keys: dict[tuple[int, str], Any] = {}
        self.failing_since: float | None = None  # time.monotonic() of the first failure in a row
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._generation = 0

    def _open(self) -> Any:
        if self._session is not None and self._pid == os.getpid() \
                and self._generation == _generations.get(self.module_path, 0):
            return self._session
        if time.monotonic() < self._retry_at:
            wait = self._retry_at - time.monotonic()
            raise PKIError(ErrorKind.UNAVAILABLE,
                           f"PKCS#11 token {self.token_label!r} unavailable (next re-open attempt in {wait:.1f} s)")
        lib = _load_lib(self.module_path)
        if self.failing_since is not None:  # recovering: stale slots and sessions in the module
            self._session = None
            _reinitialize(self.module_path)
        try:
            token = lib.get_token(token_label=self.token_label)
            try:
                self._session = token.open(rw=True, user_pin=self._pin.reveal())
            except pkcs11.UserAlreadyLoggedIn:
                self._session = token.open(rw=True)
        except pkcs11.NoSuchToken:
            raise PKIError(ErrorKind.UNAVAILABLE, f"PKCS#11 token {self.token_label!r} not found") from None
        except pkcs11.PinIncorrect:
            raise PKIError(ErrorKind.CONFIG, f"wrong PIN for PKCS#11 token {self.token_label!r}") from None
        except pkcs11.PKCS11Error as exc:
            raise PKIError(ErrorKind.UNAVAILABLE, f"PKCS#11 token {self.token_label!r}: {exc!r}") from None
        self._pid = os.getpid()
        self._generation = _generations.get(self.module_path, 0)
        self._keys.clear()
        return self._session

    def _reset(self) -> None:
        """Forget the session and handles after a failure; back off before the next re-open."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        session, self._session = self._session, None
        self._keys.clear()
        if session is not None:
            with contextlib.suppress(Exception):  # the old session may be gone with the token
                session.close()
        if now >= self._retry_at:  # a real attempt failed (not a refusal during the backoff)
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _healthy(self) -> bool:
        """Whether the open session still finds private keys on the token (after an ambiguous error)."""
        session = self._session
        if session is None:
            return False
        try:
            return any(True for _ in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        except pkcs11.PKCS11Error:
            return False

    def _succeeded(self) -> None:
        self.failing_since = None
        self._backoff = BACKOFF_FIRST
        self._retry_at = 0.0

    def _key(self, object_class: ObjectClass, label: str) -> Any:
        cache_key = (int(object_class), label)
        if cache_key not in self._keys:
            try:
                self._keys[cache_key] = self._open().get_key(object_class=object_class, label=label)
            except pkcs11.NoSuchKey:
                raise PKIError(ErrorKind.CONFIG, f"no key labelled {label!r} on token {self.token_label!r}") from None
        return self._keys[cache_key]

    def uri(self, label: str, pin_source: str | None = None) -> Pkcs11Uri:
        return build(self.token_label, label, module_path=self.module_path, pin_source=pin_source)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one PKCS#11 operation under the token lock, mapping token failures; after a failure
        the session is re-opened (with backoff) and the operation retried once."""
        with self._lock:
            reopened = self._session is None
            for attempt in (1, 2):
                try:
                    result = fn(*args, **kwargs)
                except PKIError:
                    self._reset()  # token not found, key gone, backoff: all "unusable" for liveness
                    raise
                except pkcs11.PKCS11Error as exc:
                    if not isinstance(exc, TOKEN_FAULTS) or (isinstance(exc, AMBIGUOUS) and self._healthy()):
                        # about this operation's input (e.g. a bad ciphertext): the token itself is fine
                        raise PKIError(ErrorKind.UNAVAILABLE, f"HSM operation failed: {exc!r}") from None
                    self._reset()
                    if attempt == 1 and not reopened:
                        self._retry_at = 0.0  # one immediate re-open: handles may just be stale
                        continue
                    raise PKIError(ErrorKind.UNAVAILABLE, f"HSM operation failed: {exc!r}") from None
                self._succeeded()
                return result
            raise AssertionError("unreachable")

    def unusable_for(self) -> float:
        """Seconds the token has been failing without a success in between (0 when healthy)."""
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def generate(self, spec: KeySpec, label: str) -> None:
        """Create a non-extractable key pair on the token (CKA_TOKEN, SENSITIVE, !EXTRACTABLE)."""
        private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TOKEN: True,
                            Attribute.PRIVATE: True}
        public_template = {Attribute.TOKEN: True}
        key_id = label.encode()

        def gen() -> None:
            session = self._open()
            if spec.algorithm == "ec":
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_NAMES[spec.curve or ""])},
                    local=True)
                params.generate_keypair(store=True, label=label, id=key_id, private_template=private_template,
                                        public_template=public_template)
            else:
                session.generate_keypair(KeyType.RSA, spec.bits, store=True, label=label, id=key_id,
                                         private_template=private_template, public_template=public_template)
        self.call(gen)

    def has_key(self, label: str) -> bool:
        def find() -> bool:
            return any(True for _ in self._open().get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                                Attribute.LABEL: label}))
        return bool(self.call(find))

    def destroy(self, label: str) -> None:
        def destroy() -> None:
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for obj in self._open().get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}):
                    obj.destroy()
            self._keys.clear()
        self.call(destroy)

    def protection(self, label: str) -> KeyProtection:
        def read() -> KeyProtection:
            key = self._key(ObjectClass.PRIVATE_KEY, label)
            return KeyProtection(bool(key[Attribute.SENSITIVE]), bool(key[Attribute.EXTRACTABLE]),
                                 bool(key[Attribute.ALWAYS_SENSITIVE]), bool(key[Attribute.NEVER_EXTRACTABLE]))
        return self.call(read)  # type: ignore[no-any-return]

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        def read() -> Any:
            pub = self._key(ObjectClass.PUBLIC_KEY, label)
            if pub.key_type == KeyType.EC:
                return serialization.load_der_public_key(encode_ec_public_key(pub))
            return rsa.RSAPublicNumbers(int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
                                        int.from_bytes(pub[Attribute.MODULUS], "big")).public_key()
        return self.call(read)  # type: ignore[no-any-return]

    def sign(self, label: str, data: bytes, mechanism: Mechanism, mechanism_param: Any = None) -> bytes:
        return self.call(lambda: self._key(ObjectClass.PRIVATE_KEY, label).sign(  # type: ignore[no-any-return]
            data, mechanism=mechanism, mechanism_param=mechanism_param))

    def decrypt(self, label: str, data: bytes, mechanism: Mechanism, mechanism_param: Any = None) -> bytes:
        return self.call(lambda: self._key(ObjectClass.PRIVATE_KEY, label).decrypt(  # type: ignore[no-any-return]
            data, mechanism=mechanism, mechanism_param=mechanism_param))

    def signing_key(self, label: str, *, rsa_pss: bool = False, pin_source: str | None = None) -> SigningKey:
        pub = self.public_key(label)
        uri = str(self.uri(label, pin_source))
        if isinstance(pub, ec.EllipticCurvePublicKey):
            return SigningKey(uri, Pkcs11EcPrivateKey(self, label, pub))
        return SigningKey(uri, Pkcs11RsaPrivateKey(self, label, pub), rsa_pss=rsa_pss)


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, asym_utils.Prehashed):
        return data, algorithm._algorithm
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


class Pkcs11EcPrivateKey(ec.EllipticCurvePrivateKey):
    """ECDSA through CKM_ECDSA (SoftHSM 2.6 has no hash-and-sign EC mechanisms): hash here, sign there."""

    def __init__(self, token: Pkcs11Token, label: str, public: ec.EllipticCurvePublicKey) -> None:
        self._token, self._label, self._public = token, label, public

    def sign(self, data: bytes | bytearray | memoryview, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
             ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("only ECDSA is supported")
        digest, _ = _digest(bytes(data), signature_algorithm.algorithm)
        raw = self._token.sign(self._label, digest, Mechanism.ECDSA)
        half = len(raw) // 2  # CKM_ECDSA returns r || s, each the size of the order (PKCS#11 2.40 §2.3.1)
        return asym_utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError("HSM signing keys do not do ECDH")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError("HSM keys are not extractable")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise NotImplementedError("HSM keys are not extractable")

    def __copy__(self) -> Pkcs11EcPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Pkcs11EcPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<Pkcs11EcPrivateKey {self._token.token_label}/{self._label}>"


class Pkcs11RsaPrivateKey(rsa.RSAPrivateKey):
    """RSA through CKM_SHA*_RSA_PKCS and CKM_SHA*_RSA_PKCS_PSS; decryption for the SCEP RA."""

    def __init__(self, token: Pkcs11Token, label: str, public: rsa.RSAPublicKey) -> None:
        self._token, self._label, self._public = token, label, public

    def sign(self, data: bytes | bytearray | memoryview, padding_: padding.AsymmetricPadding,
             algorithm: Any) -> bytes:
        data = bytes(data)
        if not isinstance(algorithm, hashes.HashAlgorithm):
            raise NotImplementedError("pre-hashed RSA signing is not supported by the HSM adapter")
        mech_hash, mgf, pkcs1_mech, pss_mech = _HASH_MECH[algorithm.name]
        if isinstance(padding_, padding.PSS):
            salt = padding_._salt_length
            if not isinstance(salt, int):  # DIGEST_LENGTH / AUTO / MAX → digest length (x509 uses it)
                salt = algorithm.digest_size
            return self._token.sign(self._label, data, pss_mech, (mech_hash, mgf, salt))
        if isinstance(padding_, padding.PKCS1v15):
            return self._token.sign(self._label, data, pkcs1_mech)
        raise TypeError(f"unsupported padding {padding_.name}")

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        if isinstance(padding_, padding.PKCS1v15):
            return self._token.decrypt(self._label, ciphertext, Mechanism.RSA_PKCS)
        if isinstance(padding_, padding.OAEP):
            h = padding_.algorithm
            mech_hash, mgf, _, _ = _HASH_MECH[h.name]
            return self._token.decrypt(self._label, ciphertext, Mechanism.RSA_PKCS_OAEP, (mech_hash, mgf, None))
        raise TypeError(f"unsupported padding {padding_.name}")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise NotImplementedError("HSM keys are not extractable")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise NotImplementedError("HSM keys are not extractable")

    def __copy__(self) -> Pkcs11RsaPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Pkcs11RsaPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<Pkcs11RsaPrivateKey {self._token.token_label}/{self._label}>"


_tokens: dict[tuple[str, str], Pkcs11Token] = {}


def open_token(module_path: str, token_label: str, pin: Pin) -> Pkcs11Token:
    """The process-wide token object for (module, label): one lock and one login per token."""
    key = (module_path, token_label)
    with _libs_lock:
        if key not in _tokens:
            _tokens[key] = Pkcs11Token(module_path, token_label, pin)
        return _tokens[key]
