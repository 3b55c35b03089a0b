//! `klaxon.toml`, schema version 1: parsed, secrets resolved, validated as a whole.
//!
//! Loading never stops at the first problem: every issue is collected with the field it is about
//! and what to do, so `klaxon config check` can list them all at once.

mod duration;
mod secret;
mod summary;
mod validate;

pub use duration::ConfigDuration;
pub use secret::Secret;

use crate::domain::Urgency;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; must be 1.
    pub version: Option<u32>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    pub mattermost: Option<MattermostConfig>,
    /// Named destinations that routing, incidents and escalation refer to.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub incidents: IncidentsConfig,
    #[serde(default)]
    pub escalation_policies: Vec<EscalationPolicy>,
    /// On-call rotations that escalation steps notify (`rotation:ID`).
    #[serde(default)]
    pub rotations: Vec<RotationConfig>,
    /// Scheduled maintenance windows: alerts are recorded but neither posted nor escalated.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address Mattermost and Particle reach Klaxon at (API Gateway URL, tunnel, ...).
    pub public_url: Option<url::Url>,
    /// HMAC key for button contexts, dialog state and OAuth state. At least 32 characters.
    pub signing_secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// SQLite store and queue in one file under `data_dir`.
    #[default]
    Embedded,
    /// DynamoDB table and SQS queues.
    Aws,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub backend: StorageBackend,
    /// Embedded backend: where `klaxon.db` lives. Default `./klaxon-data`.
    pub data_dir: Option<PathBuf>,
    /// AWS backend: DynamoDB table name.
    pub table: Option<String>,
    /// AWS backend: the FIFO notification queue (URL ends in `.fifo`).
    pub notify_queue_url: Option<String>,
    /// AWS backend: the standard timer queue.
    pub timer_queue_url: Option<String>,
}

impl StorageConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("klaxon-data"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostConfig {
    /// Server URL, e.g. `https://chat.example.com`.
    pub url: url::Url,
    /// The bot account's access token (REST API v4): needed for buttons, threads, in-place updates
    /// and incident channels.
    pub bot_token: Option<Secret>,
    /// The bot's user id, for loop protection: posts by it never raise alerts. Optional: without
    /// it Klaxon asks Mattermost (`GET /api/v4/users/me`) once and remembers the answer.
    pub bot_user_id: Option<String>,
    /// The team incident channels are created in.
    pub team_id: Option<String>,
    /// Incoming webhook URLs by name, for channels that are posted to without a bot.
    #[serde(default)]
    pub webhooks: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Post with the bot into this channel id (26 characters).
    pub channel_id: Option<String>,
    /// Or post through this incoming webhook (a name from `[mattermost.webhooks]`).
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Channel for events that no route matches. Without it, unmatched events are not posted.
    pub default: Option<String>,
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Event types (`alert.triggered`) or families (`alert.*`, `incident.*`).
    pub events: Vec<String>,
    /// Only events from these source ids (default: any source).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Only alerts at or above this urgency.
    pub min_urgency: Option<Urgency>,
    pub channel: String,
}

/// Every event Klaxon announces, as routing and `incidents.announce` name them.
pub const EVENT_TYPES: &[&str] = &[
    "alert.triggered",
    "alert.repeated",
    "alert.urgency_raised",
    "alert.acknowledged",
    "alert.resolved",
    "alert.escalated",
    "alert.assigned",
    "alert.snoozed",
    "alert.unsnoozed",
    "incident.started",
    "incident.mitigated",
    "incident.resolved",
    "incident.cancelled",
    "incident.severity_changed",
    "incident.commander_changed",
    "incident.updated",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Mattermost outgoing webhook (trigger words).
    Mattermost,
    /// A Particle webhook (device events).
    Particle,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Mattermost => "mattermost",
            SourceKind::Particle => "particle",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    Trigger,
    Acknowledge,
    Resolve,
    Ignore,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Appears in the hook URL: `/hooks/<kind>/<id>`. Letters, digits, `-` and `_`.
    pub id: String,
    pub kind: SourceKind,
    /// Mattermost: the outgoing webhook's token. Particle: the key sent as `Authorization:
    /// Bearer` or `?key=`.
    pub token: Option<Secret>,
    /// Accept requests without a token. Refused unless set explicitly.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default = "default_urgency")]
    pub default_urgency: Urgency,
    pub escalation_policy: Option<String>,
    /// Repeats of an open alert within this window are grouped into it. Default 10 minutes.
    pub grouping_window: Option<ConfigDuration>,
    /// Mattermost: posts by these user ids are ignored (Klaxon's bot is always ignored).
    #[serde(default)]
    pub ignore_user_ids: Vec<String>,
    /// Mattermost: allow `<trigger> ack|resolve <alert-id>` from chat. Default true.
    pub chat_actions: Option<bool>,
    /// Other sources whose alerts this one may acknowledge and resolve (its own always).
    #[serde(default)]
    pub act_on: Vec<String>,
    /// Particle: event name → action, matched exactly. Default `ALERT` → trigger, `RESOLVE` → resolve.
    #[serde(default)]
    pub events: BTreeMap<String, EventAction>,
    /// Particle: templates over `{{event}}`, `{{coreid}}`, `{{data}}`, `{{data.KEY}}`, ...
    pub summary_template: Option<String>,
    pub details_template: Option<String>,
    pub dedup_template: Option<String>,
}

fn default_urgency() -> Urgency {
    Urgency::High
}

impl SourceConfig {
    /// Whether this source may acknowledge or resolve alerts that source `owner` raised: its
    /// own, and those its `act_on` lists. An `insecure` source (anyone can call it) can raise
    /// alerts but never act on them.
    pub fn may_act_on(&self, owner: &str) -> bool {
        !self.insecure && (owner == self.id || self.act_on.iter().any(|s| s == owner))
    }

    pub fn grouping_window(&self) -> std::time::Duration {
        self.grouping_window.map_or(std::time::Duration::from_secs(600), |d| d.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `INC` gives ids like `INC-42`.
    #[serde(default = "default_prefix")]
    pub id_prefix: String,
    /// Tokens: `{seq}`, `{prefix}`, `{title}`, `{severity}`. Must contain `{seq}`.
    #[serde(default = "default_channel_template")]
    pub channel_name_template: String,
    #[serde(default)]
    pub private_channels: bool,
    /// A channel name from `[channels]` where lifecycle events are announced.
    pub announce_channel: Option<String>,
    /// Which lifecycle events to announce (`incident.started`, ...). Default: all of them.
    pub announce: Option<Vec<String>>,
    #[serde(default = "default_severities")]
    pub severities: Vec<String>,
    pub default_severity: Option<String>,
    /// The `/incident` slash command's token.
    pub command_token: Option<Secret>,
    /// The token of the outgoing webhook that mirrors incident-channel replies.
    pub mirror_token: Option<Secret>,
    pub oauth: Option<OAuthConfig>,
    #[serde(default)]
    pub dialog_fields: Vec<DialogField>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            enabled: false,
            id_prefix: default_prefix(),
            channel_name_template: default_channel_template(),
            private_channels: false,
            announce_channel: None,
            announce: None,
            severities: default_severities(),
            default_severity: None,
            command_token: None,
            mirror_token: None,
            oauth: None,
            dialog_fields: Vec::new(),
        }
    }
}

fn default_prefix() -> String {
    "INC".into()
}
fn default_channel_template() -> String {
    "inc-{seq}-{title}".into()
}
fn default_severities() -> Vec<String> {
    ["SEV1", "SEV2", "SEV3", "SEV4"].map(String::from).to_vec()
}

impl IncidentsConfig {
    pub fn default_severity(&self) -> Option<&str> {
        self.default_severity.as_deref().or_else(|| self.severities.last().map(String::as_str))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialogFieldKind {
    Text,
    Textarea,
    Select,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogField {
    pub name: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub kind: DialogFieldKind,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    pub id: String,
    /// How often to run the steps again after the last one. Default 0.
    #[serde(default)]
    pub repeat: u32,
    pub steps: Vec<EscalationStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Time since the previous step (or since the trigger) without an acknowledgement.
    pub after: ConfigDuration,
    /// Mentions to add to the escalation post, e.g. `@alice`, `@oncall`.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Also post the escalation here (a team's on-call channel).
    pub channel: Option<String>,
    /// Send each targeted user a direct message too (groups cannot get one).
    #[serde(default)]
    pub direct_message: bool,
}

/// An on-call rotation: who is on call, shift after shift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    pub id: String,
    /// Mattermost usernames, in rotation order.
    pub users: Vec<String>,
    /// Shift length: whole days (`1d`, `7d`, `1w`) hand off at `handoff` local time, DST or not;
    /// shorter ones (`12h`) are fixed spans of time.
    pub shift: ConfigDuration,
    /// Local time of the handoff, `HH:MM`. Default 09:00.
    #[serde(default = "default_handoff")]
    pub handoff: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// The date (`YYYY-MM-DD`) the first user's first shift starts, at `handoff`.
    pub start: String,
    #[serde(default)]
    pub overrides: Vec<RotationOverride>,
}

fn default_handoff() -> String {
    "09:00".into()
}

/// "alice covers bob from ... to ...": local times in the rotation's zone (`2026-12-24T09:00`)
/// or with an offset. Without `covers`, it replaces whoever is on call then.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationOverride {
    pub user: String,
    pub from: String,
    pub to: String,
    pub covers: Option<String>,
}

/// A scheduled maintenance window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub id: String,
    /// Source ids it covers; empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Local time in `time_zone` (`2026-12-01T02:00`) or an instant with an offset.
    pub start: String,
    /// How long it lasts (or give `end`).
    pub duration: Option<ConfigDuration>,
    pub end: Option<String>,
    /// Repeats every week at the same local time.
    #[serde(default)]
    pub weekly: bool,
    /// IANA time zone for `start` and `end`; default UTC.
    pub time_zone: Option<String>,
    /// Where the end-of-window summary goes (a name from `[channels]`); default: routing.default.
    pub channel: Option<String>,
}

/// One problem in the file, tied to the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.field, self.problem, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}; check the path, or run without --config to start on an empty configuration")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin} is not valid TOML for klaxon.toml v1:\n{message}")]
    Syntax { origin: String, message: String },
    #[error("{origin} has {} problem(s):\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid { origin: String, issues: Vec<ConfigIssue> },
}

impl Config {
    /// Reads, resolves and validates a file, with secrets taken from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text, &path.display().to_string(), &|name| std::env::var(name).ok())
    }

    /// Parses, resolves `${VAR}` references through `env`, and validates.
    pub fn from_toml(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { origin: origin.to_string(), message: syntax(text, &e) })?;
        let mut issues = config.resolve_secrets(env);
        // A secret whose variable is missing was already reported; its placeholder text would
        // only draw a second, misleading complaint ("too short", "not a URL").
        let unresolved: Vec<String> = issues.iter().map(|i| i.field.clone()).collect();
        issues.extend(validate::validate(&config).into_iter().filter(|i| !unresolved.contains(&i.field)));
        if issues.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { origin: origin.to_string(), issues }) }
    }

    /// The configuration `klaxon serve` starts on when there is no file: nothing configured.
    pub fn empty() -> Config {
        Config { version: Some(SCHEMA_VERSION), ..Config::default() }
    }

    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// A multi-line description for `klaxon config check` and start-up.
    pub fn summary(&self) -> String {
        summary::summary(self)
    }

    /// Parses without resolving secrets or validating: for tools that look at the file as
    /// written (`klaxon config push` checks where its secrets come from).
    pub fn parse_unresolved(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax { origin: origin.to_string(), message: syntax(text, &e) })
    }

    /// Every secret in the file (as written, or as resolved), by field name.
    pub fn secrets(&self) -> Vec<(String, Secret)> {
        let mut out = Vec::new();
        self.clone().visit_secrets(&mut |field, secret| out.push((field, secret.clone())));
        out
    }

    /// Calls `f` with every secret field of the file and its name.
    fn visit_secrets(&mut self, f: &mut dyn FnMut(String, &mut Secret)) {
        if let Some(s) = &mut self.server.signing_secret {
            f("server.signing_secret".into(), s);
        }
        if let Some(mm) = &mut self.mattermost {
            if let Some(t) = &mut mm.bot_token {
                f("mattermost.bot_token".into(), t);
            }
            for (name, url) in &mut mm.webhooks {
                f(format!("mattermost.webhooks.{name}"), url);
            }
        }
        for (i, s) in self.sources.iter_mut().enumerate() {
            if let Some(t) = &mut s.token {
                f(format!("sources[{i}].token"), t);
            }
        }
        let inc = &mut self.incidents;
        for (field, secret) in [("command_token", &mut inc.command_token), ("mirror_token", &mut inc.mirror_token)] {
            if let Some(s) = secret {
                f(format!("incidents.{field}"), s);
            }
        }
        if let Some(o) = &mut inc.oauth {
            f("incidents.oauth.client_secret".into(), &mut o.client_secret);
        }
    }

    fn resolve_secrets(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        self.visit_secrets(&mut |field, secret| {
            if let Err(missing) = secret.resolve(env) {
                let (ssm, vars): (Vec<&String>, Vec<&String>) = missing.iter().partition(|n| n.starts_with("ssm:"));
                let mut problem = Vec::new();
                if !vars.is_empty() {
                    problem.push(format!("environment variable {} is not set", join(&vars)));
                }
                if !ssm.is_empty() {
                    let names: Vec<&str> = ssm.iter().map(|n| n.trim_start_matches("ssm:")).collect();
                    problem.push(format!("SSM parameter {} does not exist or cannot be read", names.join(", ")));
                }
                let fix = if ssm.is_empty() {
                    "export it before starting Klaxon, or write the value into the file"
                } else {
                    "create it (aws ssm put-parameter --type SecureString, or klaxon config push --put-secrets) and check that the functions may read it"
                };
                issues.push(ConfigIssue { field, problem: problem.join("; "), fix: fix.into() });
            }
        });
        issues
    }
}

fn join(names: &[&String]) -> String {
    names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
}

/// Where a TOML error is (line and column) and what it is, without quoting the line: the line
/// may hold a secret (`bot_token = "..."` with a typo in it).
fn syntax(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests;
