//! The `/incident` subcommands: one table that both parses and writes the help, so the two
//! cannot drift apart.

/// Where a subcommand makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Anywhere,
    /// Only in an incident's own channel (it acts on that incident).
    IncidentChannel,
}

/// One row of the table.
pub struct Spec {
    /// The first is the name shown in help; the others are aliases.
    pub names: &'static [&'static str],
    pub args: &'static str,
    pub help: &'static str,
    pub scope: Scope,
    parse: fn(&str) -> Result<Command, String>,
}

/// A parsed subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    New { title: String },
    Mitigate,
    Resolve,
    Cancel { reason: Option<String> },
    Severity { severity: String },
    Commander { username: String },
    Update { text: String },
    Status,
    Timeline,
    List,
    Help,
    Test,
    Connect,
    OnCall,
    MaintenanceStart { length: String, source: Option<String> },
    MaintenanceStop,
    MaintenanceList,
}

fn optional(rest: &str) -> Option<String> {
    let t = rest.trim();
    (!t.is_empty()).then(|| t.to_string())
}

pub const TABLE: &[Spec] = &[
    Spec {
        names: &["new", "create", "declare"],
        args: "[title]",
        help: "declare an incident: opens a dialog (title, severity, summary, commander), then creates its channel",
        scope: Scope::Anywhere,
        parse: |rest| Ok(Command::New { title: rest.trim().to_string() }),
    },
    Spec {
        names: &["mitigate", "mitigated"],
        args: "",
        help: "mark this channel's incident mitigated (the impact has stopped)",
        scope: Scope::IncidentChannel,
        parse: |_| Ok(Command::Mitigate),
    },
    Spec {
        names: &["resolve", "resolved"],
        args: "",
        help: "resolve this channel's incident and post its retrospective draft",
        scope: Scope::IncidentChannel,
        parse: |_| Ok(Command::Resolve),
    },
    Spec {
        names: &["cancel", "cancelled", "canceled"],
        args: "[reason]",
        help: "cancel this channel's incident (a false alarm, a duplicate)",
        scope: Scope::IncidentChannel,
        parse: |rest| Ok(Command::Cancel { reason: optional(rest) }),
    },
    Spec {
        names: &["severity", "sev"],
        args: "SEVERITY",
        help: "change this channel's incident's severity, e.g. `/incident severity SEV1`",
        scope: Scope::IncidentChannel,
        parse: |rest| match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [s] => Ok(Command::Severity { severity: s.to_string() }),
            _ => Err("name one severity, e.g. `/incident severity SEV1`".into()),
        },
    },
    Spec {
        names: &["commander", "lead"],
        args: "@user",
        help: "hand this channel's incident to another commander",
        scope: Scope::IncidentChannel,
        parse: |rest| match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [u] if u.trim_start_matches('@').chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !u.trim_start_matches('@').is_empty() =>
            {
                Ok(Command::Commander { username: u.trim_start_matches('@').to_ascii_lowercase() })
            }
            _ => Err("name one user, e.g. `/incident commander @alice`".into()),
        },
    },
    Spec {
        names: &["update", "note"],
        args: "TEXT",
        help: "post a status update in this channel's incident, announced where lifecycle events go",
        scope: Scope::IncidentChannel,
        parse: |rest| match optional(rest) {
            Some(text) => Ok(Command::Update { text }),
            None => Err("say what changed, e.g. `/incident update rolled back the deploy`".into()),
        },
    },
    Spec {
        names: &["status", "info"],
        args: "",
        help: "in an incident channel: its state, severity, commander and timeline; elsewhere: the open incidents",
        scope: Scope::Anywhere,
        parse: |_| Ok(Command::Status),
    },
    Spec {
        names: &["timeline", "retro"],
        args: "",
        help: "post this channel's incident's timeline with its durations (the retrospective draft)",
        scope: Scope::IncidentChannel,
        parse: |_| Ok(Command::Timeline),
    },
    Spec {
        names: &["list", "ls"],
        args: "",
        help: "the open incidents, with links to their channels",
        scope: Scope::Anywhere,
        parse: |_| Ok(Command::List),
    },
    Spec {
        names: &["oncall", "on-call", "who"],
        args: "",
        help: "who is on call now and next in each rotation",
        scope: Scope::Anywhere,
        parse: |_| Ok(Command::OnCall),
    },
    Spec {
        names: &["maintenance", "maint"],
        args: "start DURATION [source] | stop | list",
        help: "maintenance windows: alerts are recorded but not posted or escalated until the window ends",
        scope: Scope::Anywhere,
        parse: |rest| match rest.split_whitespace().collect::<Vec<_>>()[..] {
            ["start", length] => Ok(Command::MaintenanceStart { length: length.to_string(), source: None }),
            ["start", length, source] => {
                Ok(Command::MaintenanceStart { length: length.to_string(), source: Some(source.to_string()) })
            }
            ["stop"] => Ok(Command::MaintenanceStop),
            ["list"] | [] => Ok(Command::MaintenanceList),
            _ => Err("write `/incident maintenance start 2h [source]`, `... stop` or `... list`".into()),
        },
    },
    Spec {
        names: &["test"],
        args: "",
        help: "check Klaxon's connection to Mattermost (only you see the answer)",
        scope: Scope::Anywhere,
        parse: |_| Ok(Command::Test),
    },
    Spec {
        names: &["connect"],
        args: "",
        help: "connect your Mattermost account, so channels you declare are created as you",
        scope: Scope::Anywhere,
        parse: |_| Ok(Command::Connect),
    },
    Spec { names: &["help"], args: "", help: "this list", scope: Scope::Anywhere, parse: |_| Ok(Command::Help) },
];

/// Why a command line was not understood; the text is the whole answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Unknown subcommand `{0}`.\n\n{help}", help = help("/incident"))]
    Unknown(String),
    #[error("`/incident {name}`: {why}.")]
    BadArguments { name: &'static str, why: String },
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("names", &self.names).finish_non_exhaustive()
    }
}

/// Parses the text after the command (`resolve`, `new Checkout down`). Empty text is `help`.
pub fn parse(text: &str) -> Result<(Command, &'static Spec), ParseError> {
    let text = text.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let word = word.to_lowercase();
    let word = if word.is_empty() { "help".to_string() } else { word };
    let spec =
        TABLE.iter().find(|s| s.names.contains(&word.as_str())).ok_or_else(|| ParseError::Unknown(word.clone()))?;
    let command = (spec.parse)(rest).map_err(|why| ParseError::BadArguments { name: spec.names[0], why })?;
    Ok((command, spec))
}

/// The help text, generated from [`TABLE`].
pub fn help(trigger: &str) -> String {
    let mut out = vec!["**Klaxon incident commands**".to_string(), String::new()];
    for scope in [Scope::Anywhere, Scope::IncidentChannel] {
        out.push(match scope {
            Scope::Anywhere => "Anywhere:".into(),
            Scope::IncidentChannel => "In an incident's channel:".into(),
        });
        for s in TABLE.iter().filter(|s| s.scope == scope) {
            let args = if s.args.is_empty() { String::new() } else { format!(" {}", s.args) };
            let aliases =
                if s.names.len() > 1 { format!(" (also: {})", s.names[1..].join(", ")) } else { String::new() };
            out.push(format!("- `{trigger} {}{args}`: {}{aliases}", s.names[0], s.help));
        }
        out.push(String::new());
    }
    out.join("\n").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_and_alias_parses_to_its_row() {
        for spec in TABLE {
            for name in spec.names {
                let args = match spec.names[0] {
                    "severity" => " SEV2",
                    "commander" => " @alice",
                    "update" => " rolled back",
                    "maintenance" => " list",
                    _ => "",
                };
                let (_, found) = parse(&format!("{}{args}", name.to_uppercase())).unwrap();
                assert_eq!(found.names, spec.names, "{name}");
            }
        }
    }

    #[test]
    fn arguments_are_read() {
        assert_eq!(parse("declare  Checkout is down ").unwrap().0, Command::New { title: "Checkout is down".into() });
        assert_eq!(parse("new").unwrap().0, Command::New { title: String::new() });
        assert_eq!(
            parse("cancel duplicate of INC-3").unwrap().0,
            Command::Cancel { reason: Some("duplicate of INC-3".into()) }
        );
        assert_eq!(parse("cancel").unwrap().0, Command::Cancel { reason: None });
        assert_eq!(parse("sev SEV1").unwrap().0, Command::Severity { severity: "SEV1".into() });
        assert_eq!(parse("commander @Alice.B").unwrap().0, Command::Commander { username: "alice.b".into() });
        assert_eq!(parse("").unwrap().0, Command::Help);
    }

    #[test]
    fn bad_arguments_and_unknown_words_say_what_to_do() {
        let e = parse("severity").unwrap_err().to_string();
        assert_eq!(e, "`/incident severity`: name one severity, e.g. `/incident severity SEV1`.");
        assert!(parse("commander @a @b").unwrap_err().to_string().contains("name one user"));
        assert!(parse("update").unwrap_err().to_string().contains("say what changed"));
        let e = parse("launch rockets").unwrap_err().to_string();
        assert!(e.starts_with("Unknown subcommand `launch`."), "{e}");
        assert!(e.contains("/incident new [title]"), "the help follows: {e}");
    }

    #[test]
    fn the_help_lists_every_row_with_its_aliases() {
        let h = help("/incident");
        for spec in TABLE {
            assert!(h.contains(&format!("`/incident {}", spec.names[0])), "{}", spec.names[0]);
            for alias in &spec.names[1..] {
                assert!(h.contains(alias), "{alias}");
            }
        }
        assert!(h.find("Anywhere:") < h.find("In an incident's channel:"));
    }
}
