//! Reading JSON lines from files or standard input, with positions for messages.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard base64, padded or not.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Input that cannot be used, with where it is.
#[derive(Debug)]
pub(crate) struct InvalidInput {
    pub(crate) source: String,
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.message)
    }
}

impl std::error::Error for InvalidInput {}

/// Calls `each(source, line number, line)` for every non-blank line of the files, or
/// of standard input when there are none.
pub(crate) fn for_each_line(
    files: &[PathBuf],
    mut each: impl FnMut(&str, usize, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut run = |source: &str, reader: &mut dyn BufRead| -> anyhow::Result<()> {
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            number += 1;
            let read = reader.read_line(&mut line).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    anyhow::Error::new(InvalidInput {
                        source: source.to_owned(),
                        line: number,
                        message: "line is not valid UTF-8".into(),
                    })
                } else {
                    anyhow::Error::new(e).context(format!("reading {source}"))
                }
            })?;
            if read == 0 {
                return Ok(());
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                each(source, number, text)?;
            }
        }
    };
    if files.is_empty() {
        run("<stdin>", &mut io::stdin().lock())
    } else {
        for path in files {
            let source = path.display().to_string();
            let file =
                File::open(path).map_err(|e| anyhow::anyhow!("cannot open {source}: {e}"))?;
            run(&source, &mut BufReader::new(file))?;
        }
        Ok(())
    }
}
