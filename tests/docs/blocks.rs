//! The code blocks of a Markdown page and what each one is (its info string), so that no block
//! is passed over without the runner having decided what to do with it.

/// What a fenced block is, from its info string (the words after the opening fence).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `console`: `$ command` lines, each followed by the output the page shows for it;
    /// `console eventually`: each command is run again until its output matches (an answer
    /// that depends on a worker having run).
    Console { eventually: bool },
    /// `sh`: commands that must exit 0; their output is not shown, so not compared.
    Sh,
    /// `<lang> skip: reason`: not run here, listed with its reason.
    Skip(String),
    /// `yaml`: a whole reprow config file, loaded by `reprow check -c FILE`.
    Yaml,
    /// `yaml fragment`: part of a file (or a file that is not reprow's), parsed as YAML only.
    YamlFragment,
    /// `json`: a JSON document, or JSON lines (a log line, a failed record).
    Json,
    /// `text`: not code (a diagram, error messages quoted); nothing to run.
    Text,
}

/// One fenced block.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    pub info: String,
    /// The block's lines with the fence's indentation removed.
    pub body: Vec<String>,
}

impl Block {
    /// Classifies the info string. Anything the runner does not know is an error, so an
    /// example with a typo in its marking or none at all fails the test instead of being
    /// skipped in silence.
    pub fn kind(&self) -> Result<Kind, String> {
        let info = self.info.trim();
        let (lang, rest) = info.split_once(char::is_whitespace).unwrap_or((info, ""));
        let rest = rest.trim();
        if let Some(reason) = rest.strip_prefix("skip:") {
            let reason = reason.trim();
            if reason.is_empty() || !["sh", "console", "yaml"].contains(&lang) {
                return Err(format!("`{info}`: a skip needs a language and a reason"));
            }
            return Ok(Kind::Skip(reason.to_string()));
        }
        match (lang, rest) {
            ("console", "") => Ok(Kind::Console { eventually: false }),
            ("console", "eventually") => Ok(Kind::Console { eventually: true }),
            ("sh", "") => Ok(Kind::Sh),
            ("yaml", "") => Ok(Kind::Yaml),
            ("yaml", "fragment") => Ok(Kind::YamlFragment),
            ("json", "") => Ok(Kind::Json),
            ("text", "") => Ok(Kind::Text),
            _ => Err(format!(
                "info string `{info}` is none of: console, console eventually, sh, yaml, \
                 yaml fragment, json, text, `<lang> skip: reason`"
            )),
        }
    }
}

/// Every fenced block of `text`, indented ones (inside list items) included.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut open: Option<(Block, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let block = Block {
                        line: i + 1,
                        info: info.to_string(),
                        body: Vec::new(),
                    };
                    open = Some((block, indent));
                }
            }
            Some((mut block, fence_indent)) => {
                if trimmed == "```" {
                    out.push(block);
                } else {
                    // A block's lines keep what they have beyond the fence's indentation.
                    let cut = indent.min(fence_indent);
                    block.body.push(line[cut..].to_string());
                    open = Some((block, fence_indent));
                }
            }
        }
    }
    match open {
        Some((b, _)) => Err(format!("line {}: block never closed", b.line)),
        None => Ok(out),
    }
}

/// A command of a `sh` or `console` block with the output the page shows for it (console only).
#[derive(Debug, Clone)]
pub struct Command {
    pub text: String,
    pub expected: Vec<String>,
}

/// The commands of a block: `\` continues a line; in `sh` blocks blank lines and `#` comments
/// are no commands; in `console` blocks a command starts with `$ ` and every line up to the
/// next one is its expected output.
pub fn commands(block: &Block, console: bool) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::new();
    let mut continued = false;
    for line in &block.body {
        if continued {
            let last = out.last_mut().expect("a continued command");
            last.text.push('\n');
            last.text.push_str(line);
            continued = line.ends_with('\\');
            continue;
        }
        let command = if console {
            line.strip_prefix("$ ")
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            None
        } else {
            Some(line.as_str())
        };
        match command {
            Some(c) => {
                out.push(Command {
                    text: c.to_string(),
                    expected: Vec::new(),
                });
                continued = c.ends_with('\\');
            }
            None if console => match out.last_mut() {
                Some(last) => last.expected.push(line.clone()),
                None => out.push(Command {
                    text: String::new(),
                    expected: vec![line.clone()],
                }),
            },
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_info_strings_are_errors() {
        let b = |info: &str| Block {
            line: 1,
            info: info.into(),
            body: vec![],
        };
        assert!(b("").kind().is_err());
        assert!(b("bash").kind().is_err());
        assert!(b("sh skip:").kind().is_err());
        assert_eq!(b("yaml fragment").kind(), Ok(Kind::YamlFragment));
        assert_eq!(
            b("sh skip: needs moto").kind(),
            Ok(Kind::Skip("needs moto".into()))
        );
    }

    #[test]
    fn console_commands_carry_their_output_and_continuations() {
        let text =
            "```console\n$ a \\\n  b\nout 1\nout 2\n$ c\n```\n  ```sh\n  x &\n  # no\n  ```\n";
        let bs = blocks(text).unwrap();
        assert_eq!(bs.len(), 2);
        let cs = commands(&bs[0], true);
        assert_eq!(cs[0].text, "a \\\n  b");
        assert_eq!(cs[0].expected, ["out 1", "out 2"]);
        assert_eq!(cs[1].text, "c");
        let cs = commands(&bs[1], false);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].text, "x &");
    }
}
