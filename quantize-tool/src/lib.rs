//! `onerec-quantize`: turns a checkpoint directory (`config.json` + `model.safetensors`)
//! into one self-contained OneRec model file (docs/FORMAT.md) with its weights stored as
//! f32, f16, q8_0 or q4_0, and reports what each tensor became.

pub mod cleanup;
pub mod paths;
pub mod policy;
pub mod quality;
pub mod report;

use anyhow::{Context, Result};
use clap::Parser;
use onerec_engine::format::{quant, FileWriter, TensorSpec};
use onerec_engine::schema;
use onerec_engine::tensor::DType;
use onerec_engine::ModelFile;
pub use policy::Target;
use rayon::prelude::*;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "onerec-quantize",
    version,
    about = "Write a OneRec checkpoint as one model file (f32, f16, q8_0 or q4_0)"
)]
pub struct Args {
    /// Checkpoint directory (config.json + model.safetensors), or a model file.
    #[arg(long)]
    pub input: PathBuf,
    /// The model file to write (written to a temporary file, renamed when complete).
    #[arg(long, required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Stored type of the weights: f32, f16, q8 (q8_0 blocks) or q4 (q4_0 blocks).
    #[arg(long, value_enum)]
    pub dtype: Target,
    /// Keep the tensors matching this glob in f16 (e.g. `head`; repeatable).
    #[arg(long = "keep-f16", value_name = "PATTERN")]
    pub keep_f16: Vec<String>,
    /// Quantise and report, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What one tensor became.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub source: DType,
    pub dtype: DType,
    pub bytes: usize,
    /// Σ w², Σ (w − ŵ)² over the tensor (0 for catalog tensors).
    pub sum_sq: f64,
    pub err_sq: f64,
}

impl TensorReport {
    /// ‖W − Ŵ‖ / ‖W‖.
    pub fn rel_err(&self) -> f64 {
        rel(self.err_sq, self.sum_sq)
    }
    pub fn is_weight(&self) -> bool {
        self.source.is_float() || self.source.is_quantized()
    }
}

fn rel(err_sq: f64, sum_sq: f64) -> f64 {
    if sum_sq > 0.0 {
        (err_sq / sum_sq).sqrt()
    } else if err_sq > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub target: Target,
    pub tensors: Vec<TensorReport>,
    /// Bytes of the file (written, or that would be written on a dry run).
    pub file_bytes: usize,
    /// Bytes of the same model written as f32, catalog included.
    pub f32_file_bytes: usize,
    pub written: Option<PathBuf>,
}

impl Report {
    /// Over all weights: sqrt(Σ‖W − Ŵ‖² / Σ‖W‖²).
    pub fn rel_err(&self) -> f64 {
        rel(
            self.tensors.iter().map(|t| t.err_sq).sum(),
            self.tensors.iter().map(|t| t.sum_sq).sum(),
        )
    }
    pub fn ratio_to_f32(&self) -> f64 {
        self.file_bytes as f64 / self.f32_file_bytes as f64
    }
}

/// Parses `args` (program name first) and runs the tool, printing the report.
pub fn run_from<I, T>(args: I) -> Result<Report>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args)?;
    let report = quantize(&args)?;
    print!("{}", report::table(&report));
    Ok(report)
}

/// The output tensors in a stable order: the weights as MODEL_SPEC lists them, then the
/// catalog.
fn plan(file: &ModelFile, args: &Args, keep: &policy::KeepF16) -> Result<Vec<(TensorSpec, DType)>> {
    let weights = schema::weight_shapes(&file.config);
    keep.check_used(weights.iter().map(|(n, _)| n.as_str()))?;
    let mut out = Vec::with_capacity(weights.len() + 2);
    for (name, shape) in weights {
        let t = file.tensor(&name)?;
        let dtype = policy::stored_dtype(&name, &shape, args.dtype, keep.matches(&name));
        out.push((TensorSpec { name, dtype, shape }, t.dtype));
    }
    let optional = [
        schema::CATALOG_CODEBOOKS,
        schema::CATALOG_EMBEDDINGS,
        schema::CATALOG_REMOVED,
    ]
    .into_iter()
    .filter(|n| file.entry(n).is_some());
    for name in [schema::CATALOG_ITEM_IDS, schema::CATALOG_SIDS]
        .into_iter()
        .chain(optional)
    {
        let t = file.tensor(name)?;
        out.push((
            TensorSpec {
                name: name.into(),
                dtype: t.dtype,
                shape: t.shape.to_vec(),
            },
            t.dtype,
        ));
    }
    Ok(out)
}

fn metadata(args: &Args, keep: &policy::KeepF16) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "producer".into(),
        format!("onerec-quantize {}", env!("CARGO_PKG_VERSION")).into(),
    );
    m.insert("dtype".into(), args.dtype.name().into());
    m.insert("keep_f16".into(), keep.patterns().into());
    m
}

/// Reads the input, converts every tensor and (unless a dry run) writes the file.
pub fn quantize(args: &Args) -> Result<Report> {
    let input = &args.input;
    if let (Some(out), false) = (&args.output, args.dry_run) {
        paths::check_output(input, out)?;
    }
    let file = ModelFile::open(input).with_context(|| format!("reading {}", input.display()))?;
    let keep = policy::KeepF16::new(&args.keep_f16)?;
    let plan = plan(&file, args, &keep)?;
    let specs: Vec<TensorSpec> = plan.iter().map(|(s, _)| s.clone()).collect();
    let meta = metadata(args, &keep);
    let f32_specs: Vec<TensorSpec> = specs
        .iter()
        .map(|s| TensorSpec {
            dtype: if s.dtype.is_float() || s.dtype.is_quantized() {
                DType::F32
            } else {
                s.dtype
            },
            ..s.clone()
        })
        .collect();
    let f32_file_bytes = FileWriter::planned_bytes(&file.config, &f32_specs, &meta)?;
    let (mut writer, _registered) = match (&args.output, args.dry_run) {
        (Some(out), false) => {
            let (w, r) = cleanup::create_registered(
                || FileWriter::create(out, &file.config, &specs, meta.clone()),
                FileWriter::temp_path,
            )
            .with_context(|| format!("writing {}", out.display()))?;
            (Some(w), Some(r))
        }
        _ => (None, None),
    };
    let file_bytes = FileWriter::planned_bytes(&file.config, &specs, &meta)?;

    let total: u64 = plan
        .iter()
        .map(|(s, _)| {
            file.tensor(&s.name)
                .map(|t| t.bytes.len() as u64)
                .unwrap_or(0)
        })
        .sum();
    let bar = report::progress(total, args.quiet);
    let mut tensors = Vec::with_capacity(plan.len());
    for (spec, source) in &plan {
        bar.set_message(spec.name.clone());
        let t = file.tensor(&spec.name)?;
        let (bytes, sum_sq, err_sq) =
            if spec.dtype == t.dtype && !spec.dtype.is_float() && !spec.dtype.is_quantized() {
                // Catalog tensors: copied as they are.
                (t.bytes.to_vec(), 0.0, 0.0)
            } else {
                convert(&spec.name, *source, spec.dtype, &spec.shape, t.bytes)?
            };
        if let Some(w) = writer.as_mut() {
            w.write_tensor(&spec.name, &bytes).with_context(|| {
                format!(
                    "writing {}",
                    args.output.as_deref().unwrap_or(input).display()
                )
            })?;
        }
        bar.inc(t.bytes.len() as u64);
        tensors.push(TensorReport {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            source: *source,
            dtype: spec.dtype,
            bytes: bytes.len(),
            sum_sq,
            err_sq,
        });
    }
    bar.finish_and_clear();
    let written = match writer {
        Some(w) => {
            let out = args.output.clone().unwrap_or_default();
            w.finish()
                .with_context(|| format!("writing {}", out.display()))?;
            Some(out)
        }
        None => None,
    };
    Ok(Report {
        target: args.dtype,
        tensors,
        file_bytes,
        f32_file_bytes,
        written,
    })
}

/// Decodes a stored tensor, re-encodes it as `dtype` and measures the error of the
/// round trip: `(bytes, Σ w², Σ (w − ŵ)²)`.
fn convert(
    name: &str,
    source: DType,
    dtype: DType,
    shape: &[usize],
    src: &[u8],
) -> Result<(Vec<u8>, f64, f64)> {
    let values = quant::decode(name, source, shape, src)?;
    let bytes = quant::encode(name, dtype, shape, &values)?;
    let back = quant::decode(name, dtype, shape, &bytes)?;
    let (sum_sq, err_sq) = values
        .par_iter()
        .zip(back.par_iter())
        .map(|(&w, &q)| ((w as f64).powi(2), (w as f64 - q as f64).powi(2)))
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    Ok((bytes, sum_sq, err_sq))
}
