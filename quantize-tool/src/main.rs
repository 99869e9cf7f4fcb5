//! `onerec-quantize --input CHECKPOINT_DIR --output FILE --dtype f32|f16|q8|q4`.

use std::process::ExitCode;

fn main() -> ExitCode {
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
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
