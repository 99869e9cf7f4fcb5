//! `onerec-quantize --input CHECKPOINT_DIR --output FILE --dtype f32|f16|q8|q4`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // First, so an interrupted run never leaves its temporary file behind.
    if let Err(e) = onerec_quantize::cleanup::install() {
        eprintln!("error: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let args = match <onerec_quantize::Args as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match onerec_quantize::quantize(&args) {
        Ok(report) => {
            print!("{}", onerec_quantize::report::table(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Errors that print their source in their own message (`cannot write P: why`)
            // would repeat it: skip a cause the message before already ends with.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !line.ends_with(&cause) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&cause);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
