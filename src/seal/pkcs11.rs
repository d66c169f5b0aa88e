//! The root key sealed by an HSM over PKCS#11 (`[root_key] kind = "pkcs11"`).
//!
//! The 32-byte root key is stored on disk encrypted under an AES-256 key that lives on a
//! PKCS#11 token and never leaves it (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`). This module
//! owns the four token operations: create that wrapping key, ask whether it exists, wrap
//! the root key into a self-describing blob, and unwrap the blob back.
//!
//! It must never: print, log or put into an error the PIN or any key byte; keep a PKCS#11
//! context open between calls (each call loads the module, runs `C_Initialize`, and
//! `C_Finalize`s on the way out, so a call after a restart is the same as any other); or
//! accept a PIN file that group or others can read.
//!
//! Mechanism: `CKM_AES_GCM` through `C_Encrypt`/`C_Decrypt`, a fresh 12-byte IV from the
//! token's `C_GenerateRandom` for every wrap, a 128-bit tag and the AAD
//! `keyward/v1/root-key`. The blob (version 1) is
//! `[0x01, 0x01 (AES-256-GCM), 12, iv(12), ciphertext(32) || tag(16)]`, 63 bytes.
//!
//! PKCS#11 libraries are process-wide state (a second `C_Initialize` in one process fails
//! with `CKR_CRYPTOKI_ALREADY_INITIALIZED`), so every call here holds one process-wide lock.
//! SoftHSM2 reads `SOFTHSM2_CONF` during `C_Initialize`: set it before calling.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::{Zeroize, Zeroizing};

/// Blob format version written by [`wrap_root`].
const BLOB_VERSION: u8 = 1;
/// Mechanism byte of the blob: AES-256-GCM, 128-bit tag, AAD [`AAD`].
const MECH_AES_256_GCM: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ROOT_LEN: usize = 32;
const HEADER_LEN: usize = 3;
const BLOB_LEN: usize = HEADER_LEN + IV_LEN + ROOT_LEN + TAG_LEN;
/// Additional authenticated data of every wrap: binds the blob to its purpose.
const AAD: &[u8] = b"keyward/v1/root-key";
/// Bigger than any PIN; a larger "PIN file" is the wrong file.
const MAX_PIN_FILE: u64 = 4096;

/// Serialises every use of a PKCS#11 module in this process (see the module docs).
static HSM_LOCK: Mutex<()> = Mutex::new(());

pub use crate::config::HsmConfig;

/// A root-key loader that unwraps `wrapped` with the HSM each time it runs.
pub fn loader(hsm: HsmConfig, wrapped: Vec<u8>) -> super::RootLoader {
    std::sync::Arc::new(move || {
        let bytes = unwrap_root(&hsm, &wrapped).map_err(|e| match e {
            HsmError::KeyNotFound { .. } => format!(
                "{e}, which wrapped this root key (seal.json): check token_label and the token; \
                 if that key was destroyed, nothing it wrapped can be opened again"
            ),
            e => e.to_string(),
        })?;
        keyward_crypto::RootKey::from_bytes(&*bytes).map_err(|e| e.to_string())
    })
}

/// What went wrong talking to the HSM. Messages name the module, token, key label or PIN
/// file at fault; none holds the PIN or any key byte.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module path does not name a file.
    #[error("PKCS#11 module {} does not exist", module.display())]
    ModuleMissing {
        /// The configured module path.
        module: PathBuf,
        /// Why it could not be looked at.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a loadable PKCS#11 library.
    #[error("PKCS#11 module {} could not be loaded as a PKCS#11 library", module.display())]
    ModuleLoad {
        /// The configured module path.
        module: PathBuf,
        /// The loader's or the library's error.
        #[source]
        source: CkError,
    },
    /// `C_Initialize` (or listing the slots) failed.
    #[error("PKCS#11 module {} failed to initialise", module.display())]
    Initialize {
        /// The configured module path.
        module: PathBuf,
        /// The library's error.
        #[source]
        source: CkError,
    },
    /// No initialised token carries the label.
    #[error(
        "no token labelled {token:?} in PKCS#11 module {}; tokens present: {}",
        module.display(),
        list_or_none(available)
    )]
    TokenNotFound {
        /// The configured token label.
        token: String,
        /// The configured module path.
        module: PathBuf,
        /// Labels of the tokens the module does have.
        available: Vec<String>,
    },
    /// More than one token carries the label, so which one holds the key is unclear.
    #[error("{count} tokens are labelled {token:?} in PKCS#11 module {}; labels must be unique", module.display())]
    TokenAmbiguous {
        /// The configured token label.
        token: String,
        /// The configured module path.
        module: PathBuf,
        /// How many tokens carry it.
        count: usize,
    },
    /// The PIN file could not be opened or read.
    #[error("cannot read the PIN file {}", pin_file.display())]
    PinFileUnreadable {
        /// The configured PIN file.
        pin_file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the PIN file.
    #[error(
        "the PIN file {} is open to group or others (mode {mode:04o}); run `chmod 600 {}`",
        pin_file.display(),
        pin_file.display()
    )]
    PinFileTooOpen {
        /// The configured PIN file.
        pin_file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The PIN file is empty (after trimming), not a regular file, or far too large.
    #[error("the PIN file {} does not hold a PIN: {reason}", pin_file.display())]
    PinFileInvalid {
        /// The configured PIN file.
        pin_file: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `C_Login` said `CKR_PIN_INCORRECT`.
    #[error("the PIN in {} is not accepted by token {token:?}", pin_file.display())]
    PinIncorrect {
        /// The configured PIN file.
        pin_file: PathBuf,
        /// The configured token label.
        token: String,
    },
    /// The token locked the user PIN after too many failures.
    #[error("the user PIN of token {token:?} is locked; the token's security officer must reset it")]
    PinLocked {
        /// The configured token label.
        token: String,
    },
    /// No AES secret key with the label on the token. Callers add what to
    /// do about it (init: create it; start: it was destroyed, or the label
    /// or token is wrong).
    #[error("no AES key labelled {key:?} on token {token:?}")]
    KeyNotFound {
        /// The configured key label.
        key: String,
        /// The configured token label.
        token: String,
    },
    /// `create_wrapping_key` found one already.
    #[error("a key labelled {key:?} already exists on token {token:?}; refusing to create another")]
    KeyExists {
        /// The configured key label.
        key: String,
        /// The configured token label.
        token: String,
    },
    /// More than one secret key carries the label.
    #[error("{count} secret keys are labelled {key:?} on token {token:?}; the label must name one key")]
    KeyAmbiguous {
        /// The configured key label.
        key: String,
        /// The configured token label.
        token: String,
        /// How many carry it.
        count: usize,
    },
    /// The key with the label is not a 256-bit AES key.
    #[error("the key labelled {key:?} on token {token:?} is not an AES-256 key")]
    KeyWrongType {
        /// The configured key label.
        key: String,
        /// The configured token label.
        token: String,
    },
    /// The token does not offer a mechanism this module needs.
    #[error("token {token:?} does not support {mechanism} for {usage}")]
    MechanismUnsupported {
        /// The configured token label.
        token: String,
        /// The mechanism's name.
        mechanism: &'static str,
        /// What it was needed for.
        usage: &'static str,
    },
    /// The blob is not one [`wrap_root`] writes (version, mechanism or length).
    #[error("the wrapped root key is malformed: {reason}")]
    BlobMalformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Decryption failed: the blob was altered, or was wrapped under another key.
    #[error(
        "the wrapped root key does not decrypt under key {key:?} on token {token:?}: \
         it is corrupted or was wrapped under another key"
    )]
    Decrypt {
        /// The configured key label.
        key: String,
        /// The configured token label.
        token: String,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} on token {token:?} failed")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The configured token label.
        token: String,
        /// The library's error.
        #[source]
        source: CkError,
    },
}

fn list_or_none(labels: &[String]) -> String {
    if labels.is_empty() {
        "none".to_owned()
    } else {
        labels.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>().join(", ")
    }
}

/// Creates the wrapping key: AES-256, on the token (`CKA_TOKEN`), private, sensitive, not
/// extractable, allowed to encrypt and decrypt and nothing else, labelled `key_label`.
/// Refuses if a secret key with that label exists already.
pub fn create_wrapping_key(cfg: &HsmConfig) -> Result<(), HsmError> {
    let hsm = Hsm::open(cfg, Access::ReadWrite)?;
    hsm.require_mechanism(MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN", "key generation", |i| i.generate())?;
    hsm.require_mechanism(MechanismType::AES_GCM, "CKM_AES_GCM", "encryption and decryption", |i| {
        i.encrypt() && i.decrypt()
    })?;
    if !hsm.find_keys()?.is_empty() {
        return Err(HsmError::KeyExists { key: cfg.key_label.clone(), token: cfg.token_label.clone() });
    }
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen((ROOT_LEN as u64).into()),
        Attribute::Label(cfg.key_label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    hsm.session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| hsm.op_error("C_GenerateKey (AES-256 wrapping key)", e))?;
    Ok(())
}

/// Destroys the wrapping key labelled `key_label` (`C_DestroyObject`):
/// every root key it wrapped, in seal.json files and in backups, can never
/// be unwrapped again. Refuses unless exactly one AES-256 key carries the
/// label. Callers check first that the folder's root key is not wrapped by it.
pub fn destroy_wrapping_key(cfg: &HsmConfig) -> Result<(), HsmError> {
    let hsm = Hsm::open(cfg, Access::ReadWrite)?;
    let key = hsm.wrapping_key()?;
    hsm.session.destroy_object(key).map_err(|e| hsm.op_error("C_DestroyObject (the old wrapping key)", e))?;
    // Ask again: a token that ignores the call must not look like success.
    if !hsm.find_keys()?.is_empty() {
        return Err(hsm.op_error("C_DestroyObject (the key is still there)", CkError::InvalidValue));
    }
    Ok(())
}

/// Why [`rotation_target`] refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The label asked for is unusable (the caller's mistake).
    #[error("{0}")]
    Label(String),
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The folder's seal.json names no root key that opens its store.
    #[error("{0}")]
    Seal(String),
}

/// Checks a label given for an HSM key: 1 to 128 printable characters.
pub fn check_label(label: &str) -> Result<(), String> {
    let n = label.chars().count();
    if label.trim().is_empty() || n > 128 || label.chars().any(char::is_control) {
        return Err(format!("the HSM key label {label:?} must be 1 to 128 printable characters"));
    }
    Ok(())
}

/// The HSM settings a root-key rotation wraps the new root key with: the
/// current key when `new_label` is `None`, else the key labelled
/// `new_label` on the same token, created first with `create` (refused if
/// one exists then) and required to exist without it.
pub fn rotation_target(
    current: &HsmConfig,
    new_label: Option<&str>,
    create: bool,
) -> Result<HsmConfig, TargetError> {
    let Some(label) = new_label else {
        if create {
            return Err(TargetError::Label(
                "--create-hsm-key (create_hsm_key) needs a new key label (--new-hsm-key-label)".into(),
            ));
        }
        return Ok(current.clone());
    };
    check_label(label).map_err(TargetError::Label)?;
    if label == current.key_label {
        return Err(TargetError::Label(format!(
            "the root key is wrapped by HSM key {label:?} already: a new HSM key needs a new label"
        )));
    }
    let target = HsmConfig { key_label: label.to_owned(), ..current.clone() };
    if create {
        create_wrapping_key(&target).map_err(|e| match e {
            HsmError::KeyExists { .. } => {
                TargetError::Label(format!("{e}: leave out --create-hsm-key to use it"))
            }
            e => TargetError::Hsm(e),
        })?;
    } else if !wrapping_key_exists(&target)? {
        return Err(TargetError::Label(format!(
            "no AES key labelled {label:?} on token {:?}: add --create-hsm-key to create it",
            target.token_label
        )));
    }
    Ok(target)
}

/// [`wrap_root`], then [`unwrap_root`] of the result, compared in constant
/// time: a key that encrypts but will not decrypt (a key made with other
/// tools, say) is refused before anything depends on it.
pub fn wrap_root_checked(cfg: &HsmConfig, root: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
    let wrapped = wrap_root(cfg, root)?;
    let back = unwrap_root(cfg, &wrapped)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&back[..], &root[..])) {
        return Err(HsmError::Decrypt { key: cfg.key_label.clone(), token: cfg.token_label.clone() });
    }
    Ok(wrapped)
}

/// Whether a secret key labelled `key_label` exists on the token.
pub fn wrapping_key_exists(cfg: &HsmConfig) -> Result<bool, HsmError> {
    let hsm = Hsm::open(cfg, Access::ReadOnly)?;
    Ok(!hsm.find_keys()?.is_empty())
}

/// Encrypts the 32-byte root key under the wrapping key. The result is a self-describing
/// blob (version, mechanism, IV, ciphertext and tag) that holds no secret in the clear and
/// is safe to store on disk. The IV is fresh from the token's RNG on every call.
pub fn wrap_root(cfg: &HsmConfig, root: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
    let hsm = Hsm::open(cfg, Access::ReadOnly)?;
    let key = hsm.wrapping_key()?;
    let mut iv = [0u8; IV_LEN];
    hsm.session.generate_random_slice(&mut iv).map_err(|e| hsm.op_error("C_GenerateRandom (IV)", e))?;
    let sealed = {
        // Tokens in a FIPS mode may replace the IV with one of their own and write it back
        // here (PKCS#11 3.0), so the blob records what this buffer holds afterwards.
        let params = GcmParams::new(&mut iv, AAD, (TAG_LEN as u64 * 8).into())
            .map_err(|e| hsm.op_error("AES-GCM parameters", e))?;
        hsm.session
            .encrypt(&Mechanism::AesGcm(params), key, root)
            .map_err(|e| hsm.op_error("C_Encrypt (AES-GCM wrap of the root key)", e))?
    };
    if sealed.len() != ROOT_LEN + TAG_LEN {
        return Err(hsm.op_error("C_Encrypt (AES-GCM wrap of the root key)", CkError::InvalidValue));
    }
    let mut blob = Vec::with_capacity(BLOB_LEN);
    blob.extend_from_slice(&[BLOB_VERSION, MECH_AES_256_GCM, IV_LEN as u8]);
    blob.extend_from_slice(&iv);
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

/// Decrypts a blob made by [`wrap_root`] with the wrapping key on the token.
pub fn unwrap_root(cfg: &HsmConfig, blob: &[u8]) -> Result<Zeroizing<[u8; 32]>, HsmError> {
    // Check the format before touching the token: a wrong file fails fast and clearly.
    let (iv, sealed) = parse_blob(blob)?;
    let hsm = Hsm::open(cfg, Access::ReadOnly)?;
    let key = hsm.wrapping_key()?;
    let mut iv_param = iv;
    let params = GcmParams::new(&mut iv_param, AAD, (TAG_LEN as u64 * 8).into())
        .map_err(|e| hsm.op_error("AES-GCM parameters", e))?;
    let plain = hsm.session.decrypt(&Mechanism::AesGcm(params), key, sealed).map_err(|e| match e {
        // What tokens answer to a tag that does not verify. The spec's is
        // CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 answers CKR_GENERAL_ERROR from C_Decrypt
        // itself (its decryptFinal fails). C_DecryptInit's general errors stay generic: by then
        // the key, the mechanism and the input length are all known to be right, so a failing
        // C_Decrypt means the tag did not verify.
        CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _)
        | CkError::Pkcs11(RvError::GeneralError, Function::Decrypt) => {
            HsmError::Decrypt { key: cfg.key_label.clone(), token: cfg.token_label.clone() }
        }
        other => hsm.op_error("C_Decrypt (AES-GCM unwrap of the root key)", other),
    })?;
    let plain = Zeroizing::new(plain);
    let root: [u8; ROOT_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| HsmError::BlobMalformed { reason: "it decrypts to the wrong length for a root key" })?;
    Ok(Zeroizing::new(root))
}

/// Splits a version-1 blob into IV and ciphertext||tag.
fn parse_blob(blob: &[u8]) -> Result<([u8; IV_LEN], &[u8]), HsmError> {
    let malformed = |reason| HsmError::BlobMalformed { reason };
    match blob {
        [] => Err(malformed("it is empty")),
        [v, ..] if *v != BLOB_VERSION => Err(malformed("unknown format version (expected 1)")),
        [_, m, ..] if *m != MECH_AES_256_GCM => Err(malformed("unknown mechanism (expected AES-256-GCM)")),
        [_, _, l, ..] if usize::from(*l) != IV_LEN => Err(malformed("wrong IV length (expected 12)")),
        _ if blob.len() != BLOB_LEN => Err(malformed("wrong length (expected 63 bytes)")),
        _ => {
            let mut iv = [0u8; IV_LEN];
            iv.copy_from_slice(&blob[HEADER_LEN..HEADER_LEN + IV_LEN]);
            Ok((iv, &blob[HEADER_LEN + IV_LEN..]))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    ReadWrite,
}

/// `C_Finalize` on drop, so no call leaves the library initialised.
struct Context {
    pkcs11: Option<Pkcs11>,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(p) = self.pkcs11.take() {
            // Nothing useful to do with a failure on the way out.
            let _ = p.finalize();
        }
    }
}

/// One logged-in session on the configured token, for the length of one call.
/// Field order is drop order: session (C_Logout, C_CloseSession), then context
/// (C_Finalize), then the lock.
struct Hsm<'a> {
    session: Session,
    slot: Slot,
    context: Context,
    cfg: &'a HsmConfig,
    _lock: MutexGuard<'static, ()>,
}

impl fmt::Debug for Hsm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm").field("module", &self.cfg.module).field("token", &self.cfg.token_label).finish()
    }
}

impl<'a> Hsm<'a> {
    fn open(cfg: &'a HsmConfig, access: Access) -> Result<Self, HsmError> {
        // The PIN file first: a bad one is a local mistake, reported without loading anything.
        let pin = read_pin(&cfg.pin_file)?;
        // A panic elsewhere while holding the lock leaves no state behind it (the context is
        // finalised on unwind), so a poisoned lock is safe to take.
        let lock = HSM_LOCK.lock().unwrap_or_else(|p| p.into_inner());

        let meta = std::fs::metadata(&cfg.module)
            .map_err(|source| HsmError::ModuleMissing { module: cfg.module.clone(), source })?;
        if !meta.is_file() {
            return Err(HsmError::ModuleMissing {
                module: cfg.module.clone(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        let pkcs11 = Pkcs11::new(&cfg.module)
            .map_err(|source| HsmError::ModuleLoad { module: cfg.module.clone(), source })?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|source| HsmError::Initialize { module: cfg.module.clone(), source })?;
        let context = Context { pkcs11: Some(pkcs11) };
        let p = context.pkcs11.as_ref().expect("set just above");

        let slot = find_slot(p, cfg)?;
        let token = || cfg.token_label.clone();
        let session = match access {
            Access::ReadOnly => p.open_ro_session(slot),
            Access::ReadWrite => p.open_rw_session(slot),
        }
        .map_err(|source| HsmError::Pkcs11 { operation: "C_OpenSession", token: token(), source })?;
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::PinIncorrect { pin_file: cfg.pin_file.clone(), token: token() })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked { token: token() })
            }
            Err(CkError::Pkcs11(RvError::PinLenRange | RvError::PinInvalid, _)) => {
                // The token refuses the PIN's form before checking it: same advice.
                return Err(HsmError::PinIncorrect { pin_file: cfg.pin_file.clone(), token: token() });
            }
            Err(source) => {
                return Err(HsmError::Pkcs11 { operation: "C_Login (user)", token: token(), source })
            }
        }
        drop(pin);
        Ok(Hsm { session, slot, context, cfg, _lock: lock })
    }

    fn op_error(&self, operation: &'static str, source: CkError) -> HsmError {
        HsmError::Pkcs11 { operation, token: self.cfg.token_label.clone(), source }
    }

    fn require_mechanism(
        &self,
        mech: MechanismType,
        name: &'static str,
        usage: &'static str,
        ok: impl Fn(&cryptoki::mechanism::MechanismInfo) -> bool,
    ) -> Result<(), HsmError> {
        let p = self.context.pkcs11.as_ref().expect("live for the call");
        let unsupported =
            || HsmError::MechanismUnsupported { token: self.cfg.token_label.clone(), mechanism: name, usage };
        match p.get_mechanism_info(self.slot, mech) {
            // Flags only: tokens disagree on whether AES key sizes are in bytes or bits.
            Ok(info) if ok(&info) => Ok(()),
            Ok(_) | Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => Err(unsupported()),
            Err(e) => Err(self.op_error("C_GetMechanismInfo", e)),
        }
    }

    /// Every secret key labelled `key_label` (visible to the logged-in user).
    fn find_keys(&self) -> Result<Vec<ObjectHandle>, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.cfg.key_label.as_bytes().to_vec()),
        ];
        self.session.find_objects(&template).map_err(|e| self.op_error("C_FindObjects", e))
    }

    /// The one AES-256 key labelled `key_label`.
    fn wrapping_key(&self) -> Result<ObjectHandle, HsmError> {
        let key = || self.cfg.key_label.clone();
        let token = || self.cfg.token_label.clone();
        let handles = self.find_keys()?;
        let handle = match handles.as_slice() {
            [] => return Err(HsmError::KeyNotFound { key: key(), token: token() }),
            [one] => *one,
            many => return Err(HsmError::KeyAmbiguous { key: key(), token: token(), count: many.len() }),
        };
        let attrs = self
            .session
            .get_attributes(handle, &[AttributeType::KeyType, AttributeType::ValueLen])
            .map_err(|e| self.op_error("C_GetAttributeValue", e))?;
        let is_aes = attrs.iter().any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::AES));
        let is_256 =
            attrs.iter().any(|a| matches!(a, Attribute::ValueLen(l) if u64::from(*l) == ROOT_LEN as u64));
        if !(is_aes && is_256) {
            return Err(HsmError::KeyWrongType { key: key(), token: token() });
        }
        Ok(handle)
    }
}

fn find_slot(p: &Pkcs11, cfg: &HsmConfig) -> Result<Slot, HsmError> {
    let init_err = |source| HsmError::Initialize { module: cfg.module.clone(), source };
    let mut labels = Vec::new();
    let mut matching = Vec::new();
    // Only initialised tokens: SoftHSM2 always adds one free, unlabelled slot.
    for slot in p.get_slots_with_initialized_token().map_err(init_err)? {
        let info = p.get_token_info(slot).map_err(init_err)?;
        if info.label() == cfg.token_label {
            matching.push(slot);
        }
        labels.push(info.label().to_owned());
    }
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::TokenNotFound {
            token: cfg.token_label.clone(),
            module: cfg.module.clone(),
            available: labels,
        }),
        many => Err(HsmError::TokenAmbiguous {
            token: cfg.token_label.clone(),
            module: cfg.module.clone(),
            count: many.len(),
        }),
    }
}

/// Reads the PIN file: refuses one that group or others can read, trims trailing
/// whitespace, and keeps every copy of the PIN in zeroizing memory.
fn read_pin(path: &Path) -> Result<AuthPin, HsmError> {
    let unreadable = |source| HsmError::PinFileUnreadable { pin_file: path.to_path_buf(), source };
    let invalid = |reason| HsmError::PinFileInvalid { pin_file: path.to_path_buf(), reason };
    let mut file = File::open(path).map_err(unreadable)?;
    // The mode of the file opened, not of the path (no race with a rename).
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(invalid("it is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(HsmError::PinFileTooOpen { pin_file: path.to_path_buf(), mode });
    }
    if meta.len() > MAX_PIN_FILE {
        return Err(invalid("it is larger than 4 KiB"));
    }
    // Room for the whole file up front, so reading never reallocates (and leaves a copy).
    let mut raw = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    (&mut file).take(MAX_PIN_FILE + 1).read_to_end(&mut raw).map_err(unreadable)?;
    let text = std::str::from_utf8(&raw).map_err(|_| invalid("it is not UTF-8 text"))?;
    let pin = text.trim_end();
    if pin.is_empty() {
        return Err(invalid("it is empty"));
    }
    // Exact capacity, so the conversion to a boxed str does not reallocate either.
    let mut owned = String::with_capacity(pin.len());
    owned.push_str(pin);
    let secret = AuthPin::from(owned);
    raw.zeroize();
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::sync::Mutex;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    const PIN: &str = "4321-user";

    /// Held for a whole test: SOFTHSM2_CONF is process-wide, and SoftHSM2 reads it at
    /// every C_Initialize, so no two tests may overlap (cargo runs them on threads).
    static TEST_LOCK: Mutex<()> = Mutex::new(());

    /// A private SoftHSM2 store in a temp folder with one token per label given.
    struct SoftHsm {
        dir: PathBuf,
        _guard: std::sync::MutexGuard<'static, ()>,
    }

    impl Drop for SoftHsm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl SoftHsm {
        fn new(name: &str, tokens: &[&str]) -> Self {
            let guard = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            let dir = std::env::temp_dir().join(format!("keyward-p11-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("tokens")).unwrap();
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    dir.join("tokens").display()
                ),
            )
            .unwrap();
            // For this process's C_Initialize; the child gets it explicitly too.
            std::env::set_var("SOFTHSM2_CONF", &conf);
            for label in tokens {
                let out = Command::new("softhsm2-util")
                    .env("SOFTHSM2_CONF", &conf)
                    .args([
                        "--init-token",
                        "--free",
                        "--label",
                        label,
                        "--pin",
                        PIN,
                        "--so-pin",
                        "so-pin-1234",
                    ])
                    .output()
                    .expect("softhsm2-util (apt-get install softhsm2)");
                assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
            }
            let pin = dir.join("pin");
            std::fs::write(&pin, format!("{PIN}\n")).unwrap();
            std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
            SoftHsm { dir, _guard: guard }
        }

        fn cfg(&self, token: &str) -> HsmConfig {
            HsmConfig {
                module: MODULE.into(),
                token_label: token.into(),
                pin_file: self.dir.join("pin"),
                key_label: "keyward-root-wrap".into(),
            }
        }
    }

    fn root() -> [u8; 32] {
        core::array::from_fn(|i| i as u8 ^ 0xa5)
    }

    #[test]
    fn create_wrap_unwrap_roundtrip() {
        let hsm = SoftHsm::new("roundtrip", &["kw"]);
        let cfg = hsm.cfg("kw");
        assert!(!wrapping_key_exists(&cfg).unwrap());
        create_wrapping_key(&cfg).unwrap();
        assert!(wrapping_key_exists(&cfg).unwrap());
        let blob = wrap_root(&cfg, &root()).unwrap();
        assert_eq!(blob.len(), BLOB_LEN);
        assert_eq!(&blob[..3], &[1, 1, 12]);
        assert!(!blob.windows(8).any(|w| w == &root()[..8]), "the blob must not hold the root key");
        assert_eq!(*unwrap_root(&cfg, &blob).unwrap(), root());
        // A fresh IV each time: two wraps of the same key differ, and both open.
        let again = wrap_root(&cfg, &root()).unwrap();
        assert_ne!(blob, again);
        assert_eq!(*unwrap_root(&cfg, &again).unwrap(), root());
    }

    #[test]
    fn destroy_makes_old_blobs_unreadable() {
        let hsm = SoftHsm::new("destroy", &["kw"]);
        let old = hsm.cfg("kw");
        create_wrapping_key(&old).unwrap();
        let old_blob = wrap_root(&old, &root()).unwrap();
        // A rotation target: a new label, created; the same label or a missing one refused.
        assert!(rotation_target(&old, Some("keyward-root-wrap"), true)
            .unwrap_err()
            .to_string()
            .contains("new label"));
        assert!(rotation_target(&old, Some("later"), false)
            .unwrap_err()
            .to_string()
            .contains("--create-hsm-key"));
        assert!(rotation_target(&old, None, true).unwrap_err().to_string().contains("--new-hsm-key-label"));
        assert!(rotation_target(&old, Some(""), true).unwrap_err().to_string().contains("printable"));
        assert_eq!(rotation_target(&old, None, false).unwrap(), old);
        let new = rotation_target(&old, Some("keyward-root-2"), true).unwrap();
        assert_eq!(new.key_label, "keyward-root-2");
        assert!(rotation_target(&old, Some("keyward-root-2"), true)
            .unwrap_err()
            .to_string()
            .contains("leave out"));
        assert_eq!(rotation_target(&old, Some("keyward-root-2"), false).unwrap(), new);
        let new_blob = wrap_root(&new, &root()).unwrap();
        destroy_wrapping_key(&old).unwrap();
        // The old blob can never be unwrapped again; the new key is untouched.
        assert!(matches!(unwrap_root(&old, &old_blob).unwrap_err(), HsmError::KeyNotFound { .. }));
        assert!(matches!(unwrap_root(&new, &old_blob).unwrap_err(), HsmError::Decrypt { .. }));
        assert_eq!(*unwrap_root(&new, &new_blob).unwrap(), root());
        assert!(matches!(destroy_wrapping_key(&old).unwrap_err(), HsmError::KeyNotFound { .. }));
    }

    #[test]
    fn create_refuses_an_existing_label() {
        let hsm = SoftHsm::new("exists", &["kw"]);
        let cfg = hsm.cfg("kw");
        create_wrapping_key(&cfg).unwrap();
        let err = create_wrapping_key(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::KeyExists { .. }), "{err:?}");
        assert!(err.to_string().contains("keyward-root-wrap"), "{err}");
    }

    #[test]
    fn key_attributes_are_sensitive_and_not_extractable() {
        let hsm = SoftHsm::new("attrs", &["kw"]);
        let cfg = hsm.cfg("kw");
        create_wrapping_key(&cfg).unwrap();
        // Read them back on a context of our own, as a third party would.
        let p = Pkcs11::new(MODULE).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
        let ctx = Context { pkcs11: Some(p.clone()) };
        let slot = find_slot(&p, &cfg).unwrap();
        let session = p.open_ro_session(slot).unwrap();
        session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned()))).unwrap();
        let handles = session.find_objects(&[Attribute::Label(cfg.key_label.as_bytes().to_vec())]).unwrap();
        assert_eq!(handles.len(), 1);
        let attrs = session
            .get_attributes(
                handles[0],
                &[
                    AttributeType::Class,
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Wrap,
                    AttributeType::Unwrap,
                ],
            )
            .unwrap();
        let want = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32u64.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::AlwaysSensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ];
        assert_eq!(attrs, want);
        // And the value itself cannot be read.
        let value = session.get_attributes(handles[0], &[AttributeType::Value]).unwrap();
        assert!(value.is_empty(), "CKA_VALUE must be unreadable, got {} attributes", value.len());
        drop(session);
        drop(ctx);
    }

    #[test]
    fn unwrap_after_restart() {
        let hsm = SoftHsm::new("restart", &["kw"]);
        let cfg = hsm.cfg("kw");
        create_wrapping_key(&cfg).unwrap();
        let blob = wrap_root(&cfg, &root()).unwrap();
        // Each call loads, initialises and finalises the module: this is a fresh
        // C_Initialize that reads the token back from its files, as after a restart.
        // To be sure nothing lingers, check the library is finalised between calls
        // (a second C_Initialize on a live one would fail).
        let p = Pkcs11::new(MODULE).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
        p.finalize().unwrap();
        assert_eq!(*unwrap_root(&cfg, &blob).unwrap(), root());
    }

    #[test]
    fn unwrap_in_a_new_process() {
        // A real restart: a child process (this test binary, one test) unwraps a blob
        // written here. The child finds the blob and config through the environment.
        if let Ok(blob_path) = std::env::var("KEYWARD_P11_CHILD_BLOB") {
            let cfg = HsmConfig {
                module: MODULE.into(),
                token_label: "kw".into(),
                pin_file: std::env::var_os("KEYWARD_P11_CHILD_PIN").unwrap().into(),
                key_label: "keyward-root-wrap".into(),
            };
            let blob = std::fs::read(blob_path).unwrap();
            assert_eq!(*unwrap_root(&cfg, &blob).unwrap(), root());
            return;
        }
        let hsm = SoftHsm::new("process", &["kw"]);
        let cfg = hsm.cfg("kw");
        create_wrapping_key(&cfg).unwrap();
        let blob_path = hsm.dir.join("root.sealed");
        std::fs::write(&blob_path, wrap_root(&cfg, &root()).unwrap()).unwrap();
        // This test's name as libtest knows it, wherever the module sits in the crate.
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let name = format!("{module}::unwrap_in_a_new_process");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads=1"])
            .env("KEYWARD_P11_CHILD_BLOB", &blob_path)
            .env("KEYWARD_P11_CHILD_PIN", &cfg.pin_file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("1 passed"), "child: {stdout}");
    }

    #[test]
    fn wrong_pin() {
        let hsm = SoftHsm::new("wrongpin", &["kw"]);
        let cfg = hsm.cfg("kw");
        std::fs::write(&cfg.pin_file, "not-the-pin\n").unwrap();
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::PinIncorrect { .. }), "{err:?}");
        let msg = err.to_string();
        assert_eq!(msg, format!("the PIN in {} is not accepted by token \"kw\"", cfg.pin_file.display()));
        assert!(!msg.contains("not-the-pin") && !format!("{err:?}").contains("not-the-pin"));
    }

    #[test]
    fn pin_file_missing_or_too_open() {
        let hsm = SoftHsm::new("pinfile", &["kw"]);
        let mut cfg = hsm.cfg("kw");
        std::fs::set_permissions(&cfg.pin_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::PinFileTooOpen { mode: 0o640, .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("chmod 600 {}", cfg.pin_file.display())), "{err}");

        std::fs::set_permissions(&cfg.pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&cfg.pin_file, " \n").unwrap();
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::PinFileInvalid { .. }), "{err:?}");

        cfg.pin_file = hsm.dir.join("no-such-pin");
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::PinFileUnreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-pin"), "{err}");
    }

    #[test]
    fn missing_key_label() {
        let hsm = SoftHsm::new("nokey", &["kw"]);
        let cfg = hsm.cfg("kw");
        let err = wrap_root(&cfg, &root()).unwrap_err();
        assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        // What to do about it is the caller's to say (init: create it; start: destroyed?).
        assert!(
            msg.contains("\"keyward-root-wrap\"")
                && msg.contains("\"kw\"")
                && !msg.contains("--create-hsm-key"),
            "{msg}"
        );
        // A blob made elsewhere meets the same error on unwrap.
        let blob = [&[1u8, 1, 12][..], &[0u8; 60]].concat();
        assert!(matches!(unwrap_root(&cfg, &blob).unwrap_err(), HsmError::KeyNotFound { .. }));
    }

    #[test]
    fn wrong_token_label() {
        let hsm = SoftHsm::new("notoken", &["kw", "other"]);
        let err = wrapping_key_exists(&hsm.cfg("nope")).unwrap_err();
        assert!(matches!(err, HsmError::TokenNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("\"nope\"")
                && msg.contains("\"kw\"")
                && msg.contains("\"other\"")
                && msg.contains(MODULE),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_bad_module() {
        let hsm = SoftHsm::new("nomodule", &["kw"]);
        let mut cfg = hsm.cfg("kw");
        cfg.module = "/usr/lib/softhsm/no-such-module.so".into();
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::ModuleMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("/usr/lib/softhsm/no-such-module.so"), "{err}");
        // A file that exists but is no shared library.
        cfg.module = hsm.dir.join("softhsm2.conf");
        let err = wrapping_key_exists(&cfg).unwrap_err();
        assert!(matches!(err, HsmError::ModuleLoad { .. }), "{err:?}");
        assert!(err.to_string().contains("softhsm2.conf"), "{err}");
        // A shared library that is not a PKCS#11 module (no C_GetFunctionList).
        let not_pkcs11 = [
            "/lib/x86_64-linux-gnu/libz.so.1",
            "/usr/lib/x86_64-linux-gnu/libz.so.1",
            "/lib/aarch64-linux-gnu/libz.so.1",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        if let Some(lib) = not_pkcs11 {
            cfg.module = lib.into();
            let err = wrapping_key_exists(&cfg).unwrap_err();
            assert!(matches!(err, HsmError::ModuleLoad { .. }), "{err:?}");
        }
    }

    #[test]
    fn tampered_blob() {
        let hsm = SoftHsm::new("tamper", &["kw"]);
        let cfg = hsm.cfg("kw");
        create_wrapping_key(&cfg).unwrap();
        let blob = wrap_root(&cfg, &root()).unwrap();
        // Every byte of IV, ciphertext and tag is covered.
        for i in HEADER_LEN..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let err = unwrap_root(&cfg, &bad).unwrap_err();
            assert!(matches!(err, HsmError::Decrypt { .. }), "byte {i}: {err:?}");
        }
        let err = unwrap_root(&cfg, &blob[..blob.len() - 1]).unwrap_err();
        assert!(matches!(err, HsmError::BlobMalformed { .. }), "{err:?}");
        for i in 0..HEADER_LEN {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(unwrap_root(&cfg, &bad).unwrap_err(), HsmError::BlobMalformed { .. }),
                "byte {i}"
            );
        }
        assert!(matches!(unwrap_root(&cfg, &[]).unwrap_err(), HsmError::BlobMalformed { .. }));
        // The original still opens.
        assert_eq!(*unwrap_root(&cfg, &blob).unwrap(), root());
    }

    #[test]
    fn blob_from_another_tokens_key() {
        let hsm = SoftHsm::new("othertoken", &["kw", "other"]);
        let cfg = hsm.cfg("kw");
        let other = hsm.cfg("other");
        create_wrapping_key(&cfg).unwrap();
        create_wrapping_key(&other).unwrap(); // same key label, different token and key
        let blob = wrap_root(&other, &root()).unwrap();
        let err = unwrap_root(&cfg, &blob).unwrap_err();
        assert!(matches!(err, HsmError::Decrypt { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the wrapped root key does not decrypt under key \"keyward-root-wrap\" on token \"kw\": \
             it is corrupted or was wrapped under another key"
        );
        assert_eq!(*unwrap_root(&other, &blob).unwrap(), root());
    }

    #[test]
    fn gcm_is_offered_by_softhsm() {
        // Records why AES-GCM was chosen: SoftHSM2 2.6 offers it for C_Encrypt/C_Decrypt,
        // while its AES key wrap mechanisms are for C_WrapKey/C_UnwrapKey (of key objects).
        let hsm = SoftHsm::new("mechs", &["kw"]);
        let cfg = hsm.cfg("kw");
        let p = Pkcs11::new(MODULE).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
        let ctx = Context { pkcs11: Some(p.clone()) };
        let slot = find_slot(&p, &cfg).unwrap();
        let gcm = p.get_mechanism_info(slot, MechanismType::AES_GCM).unwrap();
        assert!(gcm.encrypt() && gcm.decrypt(), "{gcm:?}");
        for (name, m) in [
            ("AES_KEY_WRAP", MechanismType::AES_KEY_WRAP),
            ("AES_KEY_WRAP_PAD", MechanismType::AES_KEY_WRAP_PAD),
        ] {
            match p.get_mechanism_info(slot, m) {
                Ok(i) => eprintln!(
                    "{name}: encrypt={} decrypt={} wrap={} unwrap={}",
                    i.encrypt(),
                    i.decrypt(),
                    i.wrap(),
                    i.unwrap()
                ),
                Err(e) => eprintln!("{name}: {e}"),
            }
        }
        eprintln!(
            "AES_GCM: encrypt={} decrypt={} wrap={} unwrap={}",
            gcm.encrypt(),
            gcm.decrypt(),
            gcm.wrap(),
            gcm.unwrap()
        );
        drop(ctx);
    }
}
