//! `station tools`: calculators for check values, DUKPT keys, TR-31 key blocks, key components
//! and key shares, for payment engineers who compare the station with other tools.
//!
//! Each command prints its result in uppercase hex (or the key block) on stdout, one value per
//! line, or with `--json` one JSON object with named fields. Invalid input fails with a one-line
//! error that names the argument and the problem. The calculators print clear keys: they are
//! for test keys, never for production key material.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use station::crypto::components;
use station::crypto::dukpt::aes::{self as aes_dukpt, InitialKeyId, KeyUsage as AesUsage, Ksn};
use station::crypto::dukpt::tdes::{self as tdes_dukpt, Ksn as TdesKsn, Variant};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::shamir::{self, KeyShare};
use station::crypto::tr31::{self, KeyBlockHeader, KeyBlockVersion};
use station::crypto::{KeyAlgorithm, SecretKey};

/// The calculators of `station tools`.
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Compute the check value of a key.
    Kcv(KcvArgs),
    /// Derive DUKPT keys.
    #[command(subcommand)]
    Dukpt(DukptCommand),
    /// Wrap and unwrap TR-31 / X9.143 key blocks.
    #[command(subcommand)]
    Tr31(Tr31Command),
    /// Combine or split XOR key components.
    #[command(subcommand)]
    Components(ComponentsCommand),
    /// Combine or split M-of-N key shares.
    #[command(subcommand)]
    Shares(SharesCommand),
}

/// Output format shared by every calculator.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print one JSON object with named fields instead of bare values.
    #[arg(long)]
    pub json: bool,
}

/// Key family given on the command line; the key length selects the exact algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Family {
    /// Triple DES, 16 or 24 bytes.
    Tdes,
    /// AES, 16, 24 or 32 bytes.
    Aes,
}

#[derive(Debug, Args)]
pub struct KcvArgs {
    /// Key in hex.
    #[arg(long)]
    pub key: String,
    /// Key family.
    #[arg(long)]
    pub algorithm: Family,
    /// Check value method: legacy (encrypt a zero block) or cmac.
    #[arg(long, default_value = "legacy")]
    pub method: MethodArg,
    /// Check value length in bytes: 2 to 4 for legacy, 2 to 5 for cmac.
    #[arg(long, default_value_t = 3)]
    pub length: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Legacy,
    Cmac,
}

#[derive(Debug, Subcommand)]
pub enum DukptCommand {
    /// TDES DUKPT, ANSI X9.24-1-2009.
    #[command(subcommand)]
    Tdes(TdesCommand),
    /// AES DUKPT, ANSI X9.24-3-2017.
    #[command(subcommand)]
    Aes(AesCommand),
}

#[derive(Debug, Subcommand)]
pub enum TdesCommand {
    /// Derive the IPEK from a double-length BDK and an initial KSN (counter zero).
    Ipek(TdesIpekArgs),
    /// Derive a transaction key variant for a KSN.
    Key(TdesKeyArgs),
}

#[derive(Debug, Args)]
pub struct TdesIpekArgs {
    /// Double-length TDES BDK in hex (32 digits).
    #[arg(long)]
    pub bdk: String,
    /// Initial KSN: 16 to 20 hex digits, padded on the left with F; the counter must be zero.
    #[arg(long)]
    pub ksn: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct TdesKeyArgs {
    /// Double-length TDES BDK in hex (32 digits).
    #[arg(long)]
    pub bdk: String,
    /// KSN: 16 to 20 hex digits, padded on the left with F.
    #[arg(long)]
    pub ksn: String,
    /// Variant of the transaction key.
    #[arg(long)]
    pub variant: VariantArg,
    /// For the data variants, also apply the one-way step (each half encrypted under the
    /// variant key) that some devices use for data encryption keys.
    #[arg(long)]
    pub one_way: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    Pin,
    MacRequest,
    MacResponse,
    DataRequest,
    DataResponse,
}

#[derive(Debug, Subcommand)]
pub enum AesCommand {
    /// Derive a device's initial key from the BDK and its initial key ID.
    InitialKey(AesInitialKeyArgs),
    /// Derive a working key for a KSN.
    Key(AesKeyArgs),
    /// Derive the update key that protects a new initial key sent to the device.
    UpdateKey(AesUpdateKeyArgs),
}

#[derive(Debug, Args)]
pub struct AesUpdateKeyArgs {
    /// AES BDK in hex (32, 48 or 64 digits).
    #[arg(long)]
    pub bdk: String,
    /// Initial key ID of the device: 16 hex digits (BDK ID, derivation ID).
    #[arg(long)]
    pub initial_key_id: String,
    /// Algorithm of the update key.
    #[arg(long)]
    pub key_type: KeyTypeArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct AesInitialKeyArgs {
    /// AES BDK in hex (32, 48 or 64 digits).
    #[arg(long)]
    pub bdk: String,
    /// Initial key ID: 16 hex digits (BDK ID, derivation ID).
    #[arg(long)]
    pub initial_key_id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct AesKeyArgs {
    /// AES BDK in hex (32, 48 or 64 digits).
    #[arg(long)]
    pub bdk: String,
    /// KSN: 24 hex digits (initial key ID, 32-bit counter).
    #[arg(long)]
    pub ksn: String,
    /// Algorithm of the derived key.
    #[arg(long)]
    pub key_type: KeyTypeArg,
    /// Usage of the derived key.
    #[arg(long)]
    pub usage: UsageArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    #[value(alias = "2tdea")]
    Tdes2,
    #[value(alias = "3tdea")]
    Tdes3,
    Aes128,
    Aes192,
    Aes256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageArg {
    KeyEncryption,
    PinEncryption,
    MacGeneration,
    MacVerification,
    MacBoth,
    DataEncryption,
    DataDecryption,
    DataBoth,
    KeyDerivation,
}

#[derive(Debug, Subcommand)]
pub enum Tr31Command {
    /// Wrap a key in a key block; the header's length field may be 0000.
    Wrap(Tr31WrapArgs),
    /// Unwrap a key block and show its key and header.
    Unwrap(Tr31UnwrapArgs),
}

#[derive(Debug, Args)]
pub struct Tr31WrapArgs {
    /// KBPK in hex: TDES for versions A, B and C, AES for D and E.
    #[arg(long)]
    pub kbpk: String,
    /// Key block header, for example D0000B1AX00N0000, with any optional blocks.
    #[arg(long)]
    pub header: String,
    /// Key to wrap, in hex; its family comes from the header's algorithm field.
    #[arg(long)]
    pub key: String,
    /// Do not pad the key to hide its length (X9.143 requires the padding on export).
    #[arg(long)]
    pub no_length_masking: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct Tr31UnwrapArgs {
    /// KBPK in hex: TDES for versions A, B and C, AES for D and E.
    #[arg(long)]
    pub kbpk: String,
    /// The key block.
    #[arg(long)]
    pub block: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum ComponentsCommand {
    /// XOR components into a key and show the key's and each component's check value.
    Combine(CombineArgs),
    /// Split a key into random XOR components.
    Split(SplitArgs),
}

#[derive(Debug, Args)]
pub struct CombineArgs {
    /// A component in hex; give the option once per component, at least twice.
    #[arg(long = "component", required = true)]
    pub components: Vec<String>,
    /// Key family.
    #[arg(long)]
    pub algorithm: Family,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Key in hex.
    #[arg(long)]
    pub key: String,
    /// Key family.
    #[arg(long)]
    pub algorithm: Family,
    /// Number of components, at least 2.
    #[arg(long, default_value_t = 2)]
    pub count: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum SharesCommand {
    /// Split a key into M-of-N shares.
    Split(SharesSplitArgs),
    /// Recover a key from at least M shares.
    Combine(SharesCombineArgs),
}

#[derive(Debug, Args)]
pub struct SharesSplitArgs {
    /// Key in hex.
    #[arg(long)]
    pub key: String,
    /// Key family.
    #[arg(long)]
    pub algorithm: Family,
    /// Number of shares needed to recover the key (M).
    #[arg(long)]
    pub threshold: usize,
    /// Number of shares to make (N).
    #[arg(long)]
    pub count: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SharesCombineArgs {
    /// A share as printed by `shares split`; give the option once per share.
    #[arg(long = "share", required = true)]
    pub shares: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A calculator failure: the argument at fault and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {argument}: {message}")]
pub struct ToolsError {
    /// The command-line argument, such as `--ksn`.
    pub argument: &'static str,
    /// Description of the problem and its fix.
    pub message: String,
}

impl ToolsError {
    fn new(argument: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            argument,
            message: error.to_string(),
        }
    }
}

/// Runs a calculator and prints its result on stdout.
pub fn run(command: ToolsCommand) -> Result<(), ToolsError> {
    println!("{}", execute(command)?);
    Ok(())
}

/// Runs a calculator and returns the text `run` prints.
pub fn execute(command: ToolsCommand) -> Result<String, ToolsError> {
    let (output, json) = match command {
        ToolsCommand::Kcv(args) => (kcv(&args)?, args.output.json),
        ToolsCommand::Dukpt(DukptCommand::Tdes(TdesCommand::Ipek(args))) => {
            (tdes_ipek(&args)?, args.output.json)
        }
        ToolsCommand::Dukpt(DukptCommand::Tdes(TdesCommand::Key(args))) => {
            (tdes_key(&args)?, args.output.json)
        }
        ToolsCommand::Dukpt(DukptCommand::Aes(AesCommand::InitialKey(args))) => {
            (aes_initial_key(&args)?, args.output.json)
        }
        ToolsCommand::Dukpt(DukptCommand::Aes(AesCommand::Key(args))) => {
            (aes_key(&args)?, args.output.json)
        }
        ToolsCommand::Dukpt(DukptCommand::Aes(AesCommand::UpdateKey(args))) => {
            (aes_update_key(&args)?, args.output.json)
        }
        ToolsCommand::Tr31(Tr31Command::Wrap(args)) => (tr31_wrap(&args)?, args.output.json),
        ToolsCommand::Tr31(Tr31Command::Unwrap(args)) => (tr31_unwrap(&args)?, args.output.json),
        ToolsCommand::Components(ComponentsCommand::Combine(args)) => {
            (components_combine(&args)?, args.output.json)
        }
        ToolsCommand::Components(ComponentsCommand::Split(args)) => {
            (components_split(&args)?, args.output.json)
        }
        ToolsCommand::Shares(SharesCommand::Split(args)) => {
            (shares_split(&args)?, args.output.json)
        }
        ToolsCommand::Shares(SharesCommand::Combine(args)) => {
            (shares_combine(&args)?, args.output.json)
        }
    };
    Ok(output.render(json))
}

/// Named results in print order. Plain output prints the first `plain_fields` values, each on
/// its own line: strings as they are, lists one item per line, objects as `name=value` pairs.
struct Output {
    fields: Vec<(&'static str, Value)>,
    plain_fields: usize,
}

impl Output {
    fn new(fields: Vec<(&'static str, Value)>) -> Self {
        let plain_fields = fields.len();
        Self {
            fields,
            plain_fields,
        }
    }

    /// Limits plain output to the first `count` fields; JSON keeps every field.
    fn plain(mut self, count: usize) -> Self {
        self.plain_fields = count;
        self
    }

    fn render(self, json: bool) -> String {
        if json {
            let object: Map<String, Value> = self
                .fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            return Value::Object(object).to_string();
        }
        let mut lines = Vec::new();
        for (_, value) in self.fields.iter().take(self.plain_fields) {
            plain_lines(value, &mut lines);
        }
        lines.join("\n")
    }
}

fn plain_lines(value: &Value, lines: &mut Vec<String>) {
    match value {
        Value::String(text) => lines.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| plain_lines(item, lines)),
        Value::Object(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|(name, value)| match value {
                    Value::String(text) => format!("{name}={text}"),
                    other => format!("{name}={other}"),
                })
                .collect();
            lines.push(parts.join(" "));
        }
        other => lines.push(other.to_string()),
    }
}

fn kcv(args: &KcvArgs) -> Result<Output, ToolsError> {
    let key = parse_key("--key", &args.key, args.algorithm)?;
    let method = match args.method {
        MethodArg::Legacy => KcvMethod::Legacy,
        MethodArg::Cmac => KcvMethod::Cmac,
    };
    let kcv = Kcv::compute_len(&key, method, args.length)
        .map_err(|error| ToolsError::new("--length", error))?;
    Ok(Output::new(vec![
        ("kcv", json!(kcv.to_hex())),
        ("method", json!(method.name())),
    ])
    .plain(1))
}

fn tdes_ipek(args: &TdesIpekArgs) -> Result<Output, ToolsError> {
    let bdk = parse_tdes_bdk(&args.bdk)?;
    let ksn = TdesKsn::from_hex(&args.ksn).map_err(|error| ToolsError::new("--ksn", error))?;
    let ipek = tdes_dukpt::ipek(&bdk, &ksn).map_err(|error| ToolsError::new("--ksn", error))?;
    Ok(Output::new(vec![
        ("ipek", json!(key_hex(&ipek))),
        ("ipek_kcv", json!(legacy_kcv(&ipek))),
        ("ksn", json!(ksn.to_hex())),
    ])
    .plain(1))
}

fn tdes_key(args: &TdesKeyArgs) -> Result<Output, ToolsError> {
    let bdk = parse_tdes_bdk(&args.bdk)?;
    let ksn = TdesKsn::from_hex(&args.ksn).map_err(|error| ToolsError::new("--ksn", error))?;
    let transaction = tdes_dukpt::transaction_key_from_bdk(&bdk, &ksn)
        .map_err(|error| ToolsError::new("--ksn", error))?;
    let variant = match args.variant {
        VariantArg::Pin => Variant::Pin,
        VariantArg::MacRequest => Variant::MacRequest,
        VariantArg::MacResponse => Variant::MacResponse,
        VariantArg::DataRequest => Variant::DataRequest,
        VariantArg::DataResponse => Variant::DataResponse,
    };
    let data_variant = matches!(variant, Variant::DataRequest | Variant::DataResponse);
    if args.one_way && !data_variant {
        return Err(ToolsError::new(
            "--one-way",
            "the one-way step applies only to data-request and data-response keys",
        ));
    }
    let mut key = tdes_dukpt::variant_key(&transaction, variant)
        .map_err(|error| ToolsError::new("--bdk", error))?;
    if args.one_way {
        key =
            tdes_dukpt::data_key_one_way(&key).map_err(|error| ToolsError::new("--bdk", error))?;
    }
    Ok(Output::new(vec![
        ("key", json!(key_hex(&key))),
        ("kcv", json!(legacy_kcv(&key))),
        ("ksn", json!(ksn.to_hex())),
        ("variant", json!(variant.name())),
        ("one_way", json!(args.one_way)),
    ])
    .plain(1))
}

fn aes_initial_key(args: &AesInitialKeyArgs) -> Result<Output, ToolsError> {
    let bdk = parse_key("--bdk", &args.bdk, Family::Aes)?;
    let id = InitialKeyId::from_hex(&args.initial_key_id)
        .map_err(|error| ToolsError::new("--initial-key-id", error))?;
    let key = aes_dukpt::initial_key(&bdk, &id, bdk.algorithm())
        .map_err(|error| ToolsError::new("--bdk", error))?;
    Ok(Output::new(vec![
        ("initial_key", json!(key_hex(&key))),
        ("kcv", json!(Kcv::compute(&key, KcvMethod::Cmac).to_hex())),
        ("kcv_method", json!("cmac")),
    ])
    .plain(1))
}

fn aes_update_key(args: &AesUpdateKeyArgs) -> Result<Output, ToolsError> {
    let bdk = parse_key("--bdk", &args.bdk, Family::Aes)?;
    let id = InitialKeyId::from_hex(&args.initial_key_id)
        .map_err(|error| ToolsError::new("--initial-key-id", error))?;
    let initial = aes_dukpt::initial_key(&bdk, &id, bdk.algorithm())
        .map_err(|error| ToolsError::new("--bdk", error))?;
    let key = aes_dukpt::update_key(&initial, &id, key_algorithm(args.key_type))
        .map_err(|error| ToolsError::new("--key-type", error))?;
    Ok(Output::new(vec![
        ("update_key", json!(key_hex(&key))),
        ("initial_key_id", json!(id.to_hex())),
    ])
    .plain(1))
}

fn key_algorithm(key_type: KeyTypeArg) -> KeyAlgorithm {
    match key_type {
        KeyTypeArg::Tdes2 => KeyAlgorithm::Tdes2,
        KeyTypeArg::Tdes3 => KeyAlgorithm::Tdes3,
        KeyTypeArg::Aes128 => KeyAlgorithm::Aes128,
        KeyTypeArg::Aes192 => KeyAlgorithm::Aes192,
        KeyTypeArg::Aes256 => KeyAlgorithm::Aes256,
    }
}

fn aes_key(args: &AesKeyArgs) -> Result<Output, ToolsError> {
    let bdk = parse_key("--bdk", &args.bdk, Family::Aes)?;
    let ksn = Ksn::from_hex(&args.ksn).map_err(|error| ToolsError::new("--ksn", error))?;
    let key_type = key_algorithm(args.key_type);
    let usage = match args.usage {
        UsageArg::KeyEncryption => AesUsage::KeyEncryptionKey,
        UsageArg::PinEncryption => AesUsage::PinEncryption,
        UsageArg::MacGeneration => AesUsage::MacGeneration,
        UsageArg::MacVerification => AesUsage::MacVerification,
        UsageArg::MacBoth => AesUsage::MacBothWays,
        UsageArg::DataEncryption => AesUsage::DataEncryptionEncrypt,
        UsageArg::DataDecryption => AesUsage::DataEncryptionDecrypt,
        UsageArg::DataBoth => AesUsage::DataEncryptionBothWays,
        UsageArg::KeyDerivation => AesUsage::KeyDerivation,
    };
    let initial = aes_dukpt::initial_key(&bdk, &ksn.initial_key_id, bdk.algorithm())
        .map_err(|error| ToolsError::new("--bdk", error))?;
    let key = aes_dukpt::working_key(&initial, &ksn, usage, key_type)
        .map_err(|error| ToolsError::new("--ksn", error))?;
    Ok(Output::new(vec![
        ("key", json!(key_hex(&key))),
        ("ksn", json!(ksn.to_hex())),
    ])
    .plain(1))
}

fn tr31_wrap(args: &Tr31WrapArgs) -> Result<Output, ToolsError> {
    let header: KeyBlockHeader = args
        .header
        .trim()
        .parse()
        .map_err(|error| ToolsError::new("--header", error))?;
    let kbpk = parse_kbpk(&args.kbpk, header.version())?;
    let family = if header.algorithm() == tr31::KeyBlockAlgorithm::Aes {
        Family::Aes
    } else {
        Family::Tdes
    };
    let key = parse_key("--key", &args.key, family)?;
    let masking = if args.no_length_masking {
        tr31::LengthMasking::Off
    } else {
        tr31::LengthMasking::MaxForAlgorithm
    };
    let block = tr31::wrap_with(&kbpk, &header, &key, masking)
        .map_err(|error| ToolsError::new("--header", error))?;
    Ok(Output::new(vec![("key_block", json!(block))]))
}

fn tr31_unwrap(args: &Tr31UnwrapArgs) -> Result<Output, ToolsError> {
    let block = args.block.trim();
    let version = block
        .chars()
        .next()
        .and_then(|code| KeyBlockVersion::from_code_str(&code.to_string()).ok())
        .ok_or_else(|| {
            ToolsError::new(
                "--block",
                "a key block starts with its version: A, B, C, D or E",
            )
        })?;
    let kbpk = parse_kbpk(&args.kbpk, version)?;
    let (header, key) =
        tr31::unwrap(&kbpk, block).map_err(|error| ToolsError::new("--block", error))?;

    let optional_blocks: Map<String, Value> = header
        .optional_blocks()
        .iter()
        .map(|block| (block.id().to_owned(), json!(block.data())))
        .collect();
    let header_json = json!({
        "version": header.version().code_str(),
        "key_usage": header.key_usage().code_str(),
        "algorithm": header.algorithm().code_str(),
        "mode_of_use": header.mode_of_use().code_str(),
        "key_version": header.key_version().as_str(),
        "exportability": header.exportability().code_str(),
        "optional_block_count": header.optional_blocks().len(),
        "key_context": header.key_context().code_str(),
        "optional_blocks": optional_blocks,
    });
    let method = if key.algorithm().is_aes() {
        KcvMethod::Cmac
    } else {
        KcvMethod::Legacy
    };
    Ok(Output::new(vec![
        ("key", json!(key_hex(&key))),
        ("header", header_json),
        ("kcv", json!(Kcv::compute(&key, method).to_hex())),
        ("kcv_method", json!(method.name())),
    ])
    .plain(2))
}

fn components_combine(args: &CombineArgs) -> Result<Output, ToolsError> {
    let parts = args
        .components
        .iter()
        .map(|text| parse_key("--component", text, args.algorithm))
        .collect::<Result<Vec<_>, _>>()?;
    let key = components::combine(&parts).map_err(|error| ToolsError::new("--component", error))?;
    let component_kcvs: Vec<String> = parts.iter().map(legacy_kcv).collect();
    Ok(Output::new(vec![
        ("key", json!(key_hex(&key))),
        ("kcv", json!(legacy_kcv(&key))),
        ("component_kcvs", json!(component_kcvs)),
    ])
    .plain(2))
}

fn components_split(args: &SplitArgs) -> Result<Output, ToolsError> {
    let key = parse_key("--key", &args.key, args.algorithm)?;
    let parts =
        components::split(&key, args.count).map_err(|error| ToolsError::new("--count", error))?;
    let listed: Vec<Value> = parts
        .iter()
        .map(|part| json!({"component": key_hex(part), "kcv": legacy_kcv(part)}))
        .collect();
    Ok(Output::new(vec![
        ("components", json!(listed)),
        ("kcv", json!(legacy_kcv(&key))),
    ]))
}

fn shares_split(args: &SharesSplitArgs) -> Result<Output, ToolsError> {
    let key = parse_key("--key", &args.key, args.algorithm)?;
    let shares = shamir::split(&key, args.threshold, args.count)
        .map_err(|error| ToolsError::new("--threshold", error))?;
    let texts: Vec<String> = shares
        .iter()
        .map(|share| share.expose_text().to_string())
        .collect();
    Ok(Output::new(vec![
        ("shares", json!(texts)),
        ("kcv", json!(legacy_kcv(&key))),
    ]))
}

fn shares_combine(args: &SharesCombineArgs) -> Result<Output, ToolsError> {
    let shares = args
        .shares
        .iter()
        .enumerate()
        .map(|(index, text)| KeyShare::from_text(text, index + 1))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ToolsError::new("--share", error))?;
    let key = shamir::combine(&shares).map_err(|error| ToolsError::new("--share", error))?;
    Ok(Output::new(vec![
        ("key", json!(key_hex(&key))),
        ("kcv", json!(legacy_kcv(&key))),
    ]))
}

fn key_hex(key: &SecretKey) -> String {
    hex::encode_upper(key.expose())
}

fn legacy_kcv(key: &SecretKey) -> String {
    Kcv::compute(key, KcvMethod::Legacy).to_hex()
}

fn parse_key(argument: &'static str, text: &str, family: Family) -> Result<SecretKey, ToolsError> {
    let text = text.trim();
    let digits = text.len();
    if !digits.is_multiple_of(2) {
        return Err(ToolsError::new(
            argument,
            format!("the key has an odd number of hex digits ({digits}); give two digits per byte"),
        ));
    }
    let algorithm = match (family, digits) {
        (Family::Tdes, 32) => KeyAlgorithm::Tdes2,
        (Family::Tdes, 48) => KeyAlgorithm::Tdes3,
        (Family::Aes, 32) => KeyAlgorithm::Aes128,
        (Family::Aes, 48) => KeyAlgorithm::Aes192,
        (Family::Aes, 64) => KeyAlgorithm::Aes256,
        (Family::Tdes, _) => {
            return Err(ToolsError::new(
                argument,
                format!(
                    "a TDES key is 32 or 48 hex digits (2-key or 3-key), not {digits}; single DES keys are not supported"
                ),
            ));
        }
        (Family::Aes, _) => {
            return Err(ToolsError::new(
                argument,
                format!("an AES key is 32, 48 or 64 hex digits, not {digits}"),
            ));
        }
    };
    SecretKey::from_hex(algorithm, text).map_err(|error| ToolsError::new(argument, error))
}

fn parse_tdes_bdk(text: &str) -> Result<SecretKey, ToolsError> {
    let key = parse_key("--bdk", text, Family::Tdes)?;
    if key.algorithm() != KeyAlgorithm::Tdes2 {
        return Err(ToolsError::new(
            "--bdk",
            "TDES DUKPT needs a double-length (2-key) BDK of 32 hex digits",
        ));
    }
    Ok(key)
}

fn parse_kbpk(text: &str, version: KeyBlockVersion) -> Result<SecretKey, ToolsError> {
    let family = match version {
        KeyBlockVersion::D | KeyBlockVersion::E => Family::Aes,
        _ => Family::Tdes,
    };
    parse_key("--kbpk", text, family)
}
