//! The rules a parsed file must meet. Each check adds an issue and carries on.

use super::{
    ChannelConfig, Config, ConfigIssue, DialogFieldKind, EVENT_TYPES, SCHEMA_VERSION, SourceConfig, SourceKind,
    StorageBackend,
};
use std::collections::HashSet;
use std::time::Duration;

struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigIssue { field: field.into(), problem: problem.into(), fix: fix.into() });
    }
}

/// Mattermost ids are 26 lowercase letters and digits.
pub(crate) fn is_mattermost_id(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_slug(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn event_pattern_ok(p: &str) -> bool {
    p == "*" || p == "alert.*" || p == "incident.*" || EVENT_TYPES.contains(&p)
}

pub(super) fn validate(c: &Config) -> Vec<ConfigIssue> {
    let mut v = Issues(Vec::new());
    match c.version {
        Some(SCHEMA_VERSION) => {}
        Some(other) => v.add("version", format!("schema version {other} is not supported"), "set version = 1"),
        None => v.add("version", "missing", "add `version = 1` at the top of the file"),
    }
    server(c, &mut v);
    storage(c, &mut v);
    mattermost(c, &mut v);
    channels(c, &mut v);
    routing(c, &mut v);
    sources(c, &mut v);
    incidents(c, &mut v);
    escalation(c, &mut v);
    rotations(c, &mut v);
    maintenance(c, &mut v);
    v.0
}

fn needs_signing(c: &Config) -> bool {
    c.mattermost.as_ref().is_some_and(|m| m.bot_token.is_some()) || c.incidents.enabled
}

fn server(c: &Config, v: &mut Issues) {
    if let Some(url) = &c.server.public_url
        && !matches!(url.scheme(), "http" | "https")
    {
        v.add(
            "server.public_url",
            format!("scheme {:?} is not http or https", url.scheme()),
            "use the https:// address Mattermost and Particle reach Klaxon at",
        );
    }
    match &c.server.signing_secret {
        Some(s) if s.expose().len() < 32 => v.add(
            "server.signing_secret",
            format!("is {} characters long, shorter than 32", s.expose().len()),
            "generate one with `openssl rand -hex 32`",
        ),
        None if needs_signing(c) => v.add(
            "server.signing_secret",
            "missing, but buttons, dialogs and OAuth state must be signed",
            "add signing_secret = \"${KLAXON_SIGNING_SECRET}\" and export a value from `openssl rand -hex 32`",
        ),
        _ => {}
    }
}

fn storage(c: &Config, v: &mut Issues) {
    let s = &c.storage;
    match s.backend {
        StorageBackend::Embedded => {
            for (field, set) in [
                ("table", s.table.is_some()),
                ("notify_queue_url", s.notify_queue_url.is_some()),
                ("timer_queue_url", s.timer_queue_url.is_some()),
            ] {
                if set {
                    v.add(
                        format!("storage.{field}"),
                        "only applies to backend = \"aws\"",
                        "remove it, or set backend = \"aws\"",
                    );
                }
            }
        }
        StorageBackend::Aws => {
            if s.table.as_deref().is_none_or(str::is_empty) {
                v.add(
                    "storage.table",
                    "missing for backend = \"aws\"",
                    "set it to the DynamoDB table's name (the stack output TableName)",
                );
            }
            match s.notify_queue_url.as_deref() {
                None | Some("") => v.add(
                    "storage.notify_queue_url",
                    "missing for backend = \"aws\"",
                    "set it to the FIFO queue URL (stack output NotifyQueueUrl)",
                ),
                Some(u) if !u.ends_with(".fifo") => v.add(
                    "storage.notify_queue_url",
                    "is not a FIFO queue (its URL must end in .fifo)",
                    "use the NotifyQueueUrl stack output",
                ),
                _ => {}
            }
            match s.timer_queue_url.as_deref() {
                None | Some("") => v.add(
                    "storage.timer_queue_url",
                    "missing for backend = \"aws\"",
                    "set it to the standard queue URL (stack output TimerQueueUrl)",
                ),
                Some(u) if u.ends_with(".fifo") => v.add(
                    "storage.timer_queue_url",
                    "is a FIFO queue, which cannot delay single messages",
                    "use the standard TimerQueueUrl stack output",
                ),
                _ => {}
            }
            if s.data_dir.is_some() {
                v.add(
                    "storage.data_dir",
                    "only applies to backend = \"embedded\"",
                    "remove it, or set backend = \"embedded\"",
                );
            }
        }
    }
}

fn mattermost(c: &Config, v: &mut Issues) {
    let Some(mm) = &c.mattermost else { return };
    if !matches!(mm.url.scheme(), "http" | "https") {
        v.add(
            "mattermost.url",
            format!("scheme {:?} is not http or https", mm.url.scheme()),
            "write the server address, e.g. https://chat.example.com",
        );
    }
    if mm.bot_token.is_none() && mm.webhooks.is_empty() {
        v.add(
            "mattermost",
            "has neither bot_token nor webhooks, so Klaxon cannot post",
            "add a bot account's token (recommended: buttons, threads, updates) or at least one incoming webhook URL",
        );
    }
    if mm.bot_token.as_ref().is_some_and(|t| t.is_empty()) {
        v.add("mattermost.bot_token", "is empty", "paste the bot's access token, or remove the line");
    }
    for (field, id) in [("bot_user_id", &mm.bot_user_id), ("team_id", &mm.team_id)] {
        if let Some(id) = id
            && !is_mattermost_id(id)
        {
            v.add(
                format!("mattermost.{field}"),
                format!("{id:?} is not a Mattermost id"),
                "copy the 26-character id (lowercase letters and digits) from Mattermost",
            );
        }
    }
    for (name, url) in &mm.webhooks {
        match url::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.path().contains("/hooks/") => {}
            _ => v.add(
                format!("mattermost.webhooks.{name}"),
                "is not an incoming webhook URL",
                "copy it from Integrations > Incoming Webhooks; it looks like https://chat.example.com/hooks/xxxxxxxx",
            ),
        }
    }
}

fn channel_ref(c: &Config, v: &mut Issues, field: &str, name: &str) {
    if !c.channels.contains_key(name) {
        let known: Vec<&str> = c.channels.keys().map(String::as_str).collect();
        let fix = if known.is_empty() {
            format!("define it as [channels.{name}] with a channel_id or webhook")
        } else {
            format!("use one of {} or define [channels.{name}]", known.join(", "))
        };
        v.add(field, format!("channel {name:?} is not defined"), fix);
    }
}

fn channels(c: &Config, v: &mut Issues) {
    let mm = c.mattermost.as_ref();
    for (name, ch) in &c.channels {
        let field = format!("channels.{name}");
        match ch {
            ChannelConfig { channel_id: Some(_), webhook: Some(_) } => {
                v.add(
                    &field,
                    "sets both channel_id and webhook",
                    "keep one: channel_id posts with the bot, webhook posts through an incoming webhook",
                );
            }
            ChannelConfig { channel_id: None, webhook: None } => {
                v.add(
                    &field,
                    "sets neither channel_id nor webhook",
                    "add channel_id = \"<26-char id>\" or webhook = \"<name from [mattermost.webhooks]>\"",
                );
            }
            ChannelConfig { channel_id: Some(id), .. } => {
                if !is_mattermost_id(id) {
                    v.add(
                        format!("{field}.channel_id"),
                        format!("{id:?} is not a Mattermost channel id"),
                        "copy the 26-character id from the channel's View Info",
                    );
                }
                if mm.is_none_or(|m| m.bot_token.is_none()) {
                    v.add(
                        format!("{field}.channel_id"),
                        "posting by channel id needs a bot",
                        "set mattermost.bot_token, or post through an incoming webhook instead",
                    );
                }
            }
            ChannelConfig { webhook: Some(hook), .. } => {
                if mm.is_none_or(|m| !m.webhooks.contains_key(hook)) {
                    v.add(
                        format!("{field}.webhook"),
                        format!("webhook {hook:?} is not defined"),
                        format!("add it under [mattermost.webhooks] as {hook} = \"https://.../hooks/...\""),
                    );
                }
            }
        }
    }
}

fn routing(c: &Config, v: &mut Issues) {
    if let Some(d) = &c.routing.default {
        channel_ref(c, v, "routing.default", d);
    }
    for (i, r) in c.routing.routes.iter().enumerate() {
        let field = format!("routing.routes[{i}]");
        if r.events.is_empty() {
            v.add(
                format!("{field}.events"),
                "is empty, so the route matches nothing",
                "list event types such as \"alert.triggered\" or \"alert.*\"",
            );
        }
        for e in &r.events {
            if !event_pattern_ok(e) {
                v.add(
                    format!("{field}.events"),
                    format!("{e:?} is not an event type"),
                    format!("use \"alert.*\", \"incident.*\" or one of {}", EVENT_TYPES.join(", ")),
                );
            }
        }
        for s in &r.sources {
            if c.source(s).is_none() {
                v.add(
                    format!("{field}.sources"),
                    format!("source {s:?} is not defined"),
                    "use the id of a [[sources]] entry",
                );
            }
        }
        channel_ref(c, v, &format!("{field}.channel"), &r.channel);
    }
}

fn sources(c: &Config, v: &mut Issues) {
    let mut seen = HashSet::new();
    for (i, s) in c.sources.iter().enumerate() {
        let field = format!("sources[{i}]");
        if !is_slug(&s.id) {
            v.add(
                format!("{field}.id"),
                format!("{:?} cannot appear in a URL", s.id),
                "use 1-64 letters, digits, - or _",
            );
        } else if !seen.insert(s.id.as_str()) {
            v.add(
                format!("{field}.id"),
                format!("{:?} is used by an earlier source", s.id),
                "give every source its own id",
            );
        }
        match (&s.token, s.insecure) {
            (None, false) => v.add(
                format!("{field}.token"),
                "missing, so anyone who finds the URL could raise alerts",
                match s.kind {
                    SourceKind::Mattermost => "paste the outgoing webhook's token (token = \"${MM_HOOK_TOKEN}\"), or set insecure = true to accept unauthenticated requests",
                    SourceKind::Particle => "choose a long random key (token = \"${PARTICLE_KEY}\") and send it from the Particle webhook, or set insecure = true",
                },
            ),
            (Some(t), _) if t.expose().len() < 8 => v.add(format!("{field}.token"), "is shorter than 8 characters", "use the full token; for Particle pick a long random key"),
            (Some(_), true) => v.add(format!("{field}.insecure"), "is true although a token is set", "remove insecure = true; the token is checked"),
            _ => {}
        }
        if let Some(p) = &s.escalation_policy
            && !c.escalation_policies.iter().any(|e| &e.id == p)
        {
            v.add(
                format!("{field}.escalation_policy"),
                format!("policy {p:?} is not defined"),
                "use the id of an [[escalation_policies]] entry",
            );
        }
        for other in &s.act_on {
            if !c.sources.iter().any(|o| &o.id == other) {
                v.add(
                    format!("{field}.act_on"),
                    format!("source {other:?} is not defined"),
                    "list ids of [[sources]] entries whose alerts this source may acknowledge and resolve",
                );
            }
        }
        if s.insecure && !s.act_on.is_empty() {
            v.add(
                format!("{field}.act_on"),
                "is set on an insecure source, which anyone can call, so it never acts on alerts",
                "give the source a token, or remove act_on",
            );
        }
        if s.grouping_window() > Duration::from_secs(86_400) {
            v.add(format!("{field}.grouping_window"), "is longer than 24h", "use a window of at most \"24h\"");
        }
        match s.kind {
            SourceKind::Mattermost => mattermost_source(s, &field, v),
            SourceKind::Particle => particle_source(s, &field, v),
        }
    }
}

fn mattermost_source(s: &SourceConfig, field: &str, v: &mut Issues) {
    for (name, set) in [
        ("events", !s.events.is_empty()),
        ("summary_template", s.summary_template.is_some()),
        ("details_template", s.details_template.is_some()),
        ("dedup_template", s.dedup_template.is_some()),
    ] {
        if set {
            v.add(format!("{field}.{name}"), "only applies to Particle sources", "remove it");
        }
    }
    for id in &s.ignore_user_ids {
        if !is_mattermost_id(id) {
            v.add(
                format!("{field}.ignore_user_ids"),
                format!("{id:?} is not a Mattermost user id"),
                "use 26-character user ids, not usernames",
            );
        }
    }
}

fn particle_source(s: &SourceConfig, field: &str, v: &mut Issues) {
    if !s.ignore_user_ids.is_empty() {
        v.add(format!("{field}.ignore_user_ids"), "only applies to Mattermost sources", "remove it");
    }
    if s.chat_actions.is_some() {
        v.add(format!("{field}.chat_actions"), "only applies to Mattermost sources", "remove it");
    }
    for name in s.events.keys() {
        if name.is_empty() || name.len() > 64 {
            v.add(
                format!("{field}.events"),
                format!("event name {name:?} must be 1-64 characters"),
                "use the exact event name the device publishes",
            );
        }
    }
    for (name, t) in [
        ("summary_template", &s.summary_template),
        ("details_template", &s.details_template),
        ("dedup_template", &s.dedup_template),
    ] {
        if let Some(t) = t
            && let Err(problem) = check_template(t)
        {
            v.add(
                format!("{field}.{name}"),
                problem,
                "write placeholders as {{event}}, {{coreid}}, {{data}} or {{data.KEY}}",
            );
        }
    }
}

/// Every `{{` must close with `}}` around a non-empty name.
pub(crate) fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!("a placeholder opened with {{{{ is never closed in {t:?}"));
        };
        let name = after[..close].trim();
        if name.is_empty() || name.contains("{{") {
            return Err(format!("placeholder {{{{{}}}}} has no name", &after[..close]));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

fn incidents(c: &Config, v: &mut Issues) {
    let inc = &c.incidents;
    if !inc.enabled {
        return;
    }
    let mm = c.mattermost.as_ref();
    if mm.is_none_or(|m| m.bot_token.is_none()) && inc.oauth.is_none() {
        v.add(
            "incidents.enabled",
            "incidents need a bot (or an installed OAuth app) to create channels and post",
            "set mattermost.bot_token, or configure [incidents.oauth] and run `klaxon oauth-install-url`, or set incidents.enabled = false",
        );
    }
    if mm.is_none_or(|m| m.team_id.is_none()) {
        v.add(
            "mattermost.team_id",
            "missing, but incident channels are created in a team",
            "set it to the team's 26-character id",
        );
    }
    if inc.id_prefix.is_empty()
        || inc.id_prefix.len() > 10
        || !inc.id_prefix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        v.add(
            "incidents.id_prefix",
            format!("{:?} is not 1-10 capital letters or digits", inc.id_prefix),
            "use something like \"INC\"",
        );
    }
    if !inc.channel_name_template.contains("{seq}") {
        v.add(
            "incidents.channel_name_template",
            "does not contain {seq}, so two incidents could want the same channel",
            "include {seq}, e.g. \"inc-{seq}-{title}\"",
        );
    }
    let mut rest = inc.channel_name_template.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name = after.split('}').next().unwrap_or_default();
        if !after.contains('}') || !matches!(name, "seq" | "prefix" | "title" | "severity") {
            v.add(
                "incidents.channel_name_template",
                format!("{{{name}}} is not a known token"),
                "use {seq}, {prefix}, {title} and {severity}",
            );
            break;
        }
        rest = &after[name.len() + 1..];
    }
    if let Some(ch) = &inc.announce_channel {
        channel_ref(c, v, "incidents.announce_channel", ch);
    }
    for e in inc.announce.iter().flatten() {
        if !e.starts_with("incident.") || !EVENT_TYPES.contains(&e.as_str()) {
            v.add("incidents.announce", format!("{e:?} is not an incident event"), "use incident.started, incident.mitigated, incident.resolved, incident.cancelled, incident.severity_changed, incident.commander_changed or incident.updated");
        }
    }
    if inc.severities.is_empty() {
        v.add("incidents.severities", "is empty", "list at least one, e.g. [\"SEV1\", \"SEV2\", \"SEV3\"]");
    }
    let unique: HashSet<&String> = inc.severities.iter().collect();
    if unique.len() != inc.severities.len() {
        v.add("incidents.severities", "lists a severity twice", "list each severity once");
    }
    if let Some(d) = &inc.default_severity
        && !inc.severities.contains(d)
    {
        v.add(
            "incidents.default_severity",
            format!("{d:?} is not in incidents.severities"),
            format!("use one of {}", inc.severities.join(", ")),
        );
    }
    if inc.command_token.is_none() {
        v.add(
            "incidents.command_token",
            "missing, so the /incident command cannot be verified",
            "paste the slash command's token (Integrations > Slash Commands)",
        );
    }
    if let Some(o) = &inc.oauth
        && o.client_id.is_empty()
    {
        v.add("incidents.oauth.client_id", "is empty", "copy the OAuth 2.0 application's client id");
    }
    let mut names = HashSet::new();
    for (i, f) in inc.dialog_fields.iter().enumerate() {
        let field = format!("incidents.dialog_fields[{i}]");
        if !is_slug(&f.name) || matches!(f.name.as_str(), "title" | "severity" | "summary") {
            v.add(
                format!("{field}.name"),
                format!("{:?} is not usable (title, severity and summary are built in)", f.name),
                "use another name of letters, digits, - or _",
            );
        } else if !names.insert(f.name.as_str()) {
            v.add(format!("{field}.name"), format!("{:?} is used twice", f.name), "give every field its own name");
        }
        match f.kind {
            DialogFieldKind::Select if f.options.is_empty() => v.add(
                format!("{field}.options"),
                "a select field needs options",
                "list them, e.g. options = [\"api\", \"web\"]",
            ),
            DialogFieldKind::Text | DialogFieldKind::Textarea if !f.options.is_empty() => v.add(
                format!("{field}.options"),
                "only select fields have options",
                "remove options, or set type = \"select\"",
            ),
            _ => {}
        }
    }
}

fn rotations(c: &Config, v: &mut Issues) {
    let mut ids = HashSet::new();
    for (i, r) in c.rotations.iter().enumerate() {
        let field = format!("rotations[{i}]");
        if !is_slug(&r.id) {
            v.add(format!("{field}.id"), format!("{:?} is not a valid id", r.id), "use letters, digits, - or _");
        } else if !ids.insert(r.id.as_str()) {
            v.add(format!("{field}.id"), format!("{:?} is used twice", r.id), "give every rotation its own id");
        }
        if let Err(e) = crate::escalation::rotation::Rotation::from_config(r) {
            v.add(&field, e, "see klaxon.example.toml for a complete rotation");
        }
    }
}

fn maintenance(c: &Config, v: &mut Issues) {
    let mut ids = HashSet::new();
    for (i, m) in c.maintenance.iter().enumerate() {
        let field = format!("maintenance[{i}]");
        if !is_slug(&m.id) {
            v.add(format!("{field}.id"), format!("{:?} is not a valid id", m.id), "use letters, digits, - or _");
        } else if !ids.insert(m.id.as_str()) {
            v.add(format!("{field}.id"), format!("{:?} is used twice", m.id), "give every window its own id");
        }
        if let Err(e) = crate::escalation::maintenance::Schedule::from_config(m) {
            v.add(&field, e, "see klaxon.example.toml for a complete window");
        }
        for s in &m.sources {
            if c.source(s).is_none() {
                v.add(
                    format!("{field}.sources"),
                    format!("source {s:?} is not defined"),
                    "use the id of a [[sources]] entry",
                );
            }
        }
        if let Some(ch) = &m.channel {
            channel_ref(c, v, &format!("{field}.channel"), ch);
        }
    }
}

fn escalation(c: &Config, v: &mut Issues) {
    let mut ids = HashSet::new();
    for (i, p) in c.escalation_policies.iter().enumerate() {
        let field = format!("escalation_policies[{i}]");
        if !is_slug(&p.id) {
            v.add(format!("{field}.id"), format!("{:?} is not a valid id", p.id), "use letters, digits, - or _");
        } else if !ids.insert(p.id.as_str()) {
            v.add(format!("{field}.id"), format!("{:?} is used twice", p.id), "give every policy its own id");
        }
        if p.steps.is_empty() {
            v.add(
                format!("{field}.steps"),
                "is empty",
                "add at least one [[escalation_policies.steps]] with after and notify",
            );
        }
        if p.repeat > 10 {
            v.add(
                format!("{field}.repeat"),
                format!("{} repeats is more than 10", p.repeat),
                "use at most 10; an alert nobody acknowledges after that needs a person, not more pings",
            );
        }
        for (j, s) in p.steps.iter().enumerate() {
            let sf = format!("{field}.steps[{j}]");
            if s.after.0 < Duration::from_secs(60) || s.after.0 > Duration::from_secs(7 * 86_400) {
                v.add(format!("{sf}.after"), "must be between 1m and 7d", "write it like \"5m\" or \"2d\"");
            }
            if s.notify.is_empty() && s.channel.is_none() {
                v.add(&sf, "neither notifies anyone nor posts anywhere", "add notify = [\"@oncall\"] or a channel");
            }
            for n in &s.notify {
                if let Some(r) = n.strip_prefix("rotation:") {
                    if !c.rotations.iter().any(|x| x.id == r) {
                        v.add(
                            format!("{sf}.notify"),
                            format!("rotation {r:?} is not defined"),
                            "define it as a [[rotations]] entry with that id",
                        );
                    }
                } else if !n.starts_with('@') || n.len() < 2 {
                    v.add(
                        format!("{sf}.notify"),
                        format!("{n:?} is neither a mention nor a rotation"),
                        "write users and groups as @name, rotations as rotation:ID",
                    );
                }
            }
            if let Some(ch) = &s.channel {
                channel_ref(c, v, &format!("{sf}.channel"), ch);
            }
        }
    }
}
