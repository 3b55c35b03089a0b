//! `klaxon test-connection` and `klaxon channels`: check every configured destination before an
//! alert depends on it, and list the channels the bot can post to.

use crate::config::Config;
use crate::mattermost::{Mattermost, MattermostError, WebhookPost};

/// One checked destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub line: String,
}

/// The text of the test post sent through each webhook.
pub const TEST_POST: &str =
    "**Klaxon connection test**: this incoming webhook works. Nothing is wrong; you can delete this post.";

fn fix_of(e: &MattermostError) -> String {
    e.to_string()
}

/// Checks the bot (who it is, that it is a bot) and every channel in `[channels]`: that the bot
/// is a member of each bot channel, and that each webhook takes a (clearly marked) test post.
pub async fn test_connection(config: &Config) -> Vec<Check> {
    let Some(mm_config) = &config.mattermost else {
        return vec![Check {
            ok: false,
            line: "mattermost: not configured; add a [mattermost] section to klaxon.toml".into(),
        }];
    };
    let mm = Mattermost::new(mm_config.url.clone(), mm_config.bot_token.clone());
    let mut checks = Vec::new();
    let bot = if mm_config.bot_token.is_some() {
        match mm.me().await {
            Ok(me) if me.is_bot => {
                checks
                    .push(Check { ok: true, line: format!("bot: @{} ({}) at {}", me.username, me.id, mm_config.url) });
                Some(me)
            }
            Ok(me) => {
                checks.push(Check {
                    ok: false,
                    line: format!("bot: the token belongs to @{}, a person, not a bot; create a bot account (System Console > Integrations > Bot Accounts) and use its token", me.username),
                });
                Some(me)
            }
            Err(e) => {
                checks.push(Check { ok: false, line: format!("bot: {}", fix_of(&e)) });
                None
            }
        }
    } else {
        None
    };
    for (name, channel) in &config.channels {
        let used_by: Vec<String> = config
            .routing
            .routes
            .iter()
            .filter(|r| &r.channel == name)
            .map(|r| r.events.join(","))
            .chain((config.routing.default.as_deref() == Some(name)).then(|| "default".to_string()))
            .collect();
        let routes = if used_by.is_empty() { String::new() } else { format!(" [routes: {}]", used_by.join("; ")) };
        let check = match (&channel.channel_id, &channel.webhook) {
            (Some(id), _) => match (&bot, mm_config.bot_token.is_some()) {
                (_, false) => Check {
                    ok: false,
                    line: format!(
                        "{name} (channel {id}): no bot token, so nothing can post there; set mattermost.bot_token"
                    ),
                },
                (None, true) => Check {
                    ok: false,
                    line: format!("{name} (channel {id}): not checked, the bot's token does not work"),
                },
                (Some(me), true) => match mm.is_member(id).await {
                    Ok(true) => {
                        Check { ok: true, line: format!("{name} (channel {id}): @{} can post here", me.username) }
                    }
                    Ok(false) => Check {
                        ok: false,
                        line: format!(
                            "{name} (channel {id}): @{} is not a member (or the channel does not exist); add the bot to the channel, or fix channel_id (`klaxon channels` lists the bot's channels)",
                            me.username
                        ),
                    },
                    Err(e) => Check { ok: false, line: format!("{name} (channel {id}): {}", fix_of(&e)) },
                },
            },
            (None, Some(hook)) => match mm_config.webhooks.get(hook) {
                None => Check { ok: false, line: format!("{name} (webhook {hook}): not in [mattermost.webhooks]") },
                Some(url) => {
                    let post = WebhookPost { text: TEST_POST.into(), attachments: Vec::new() };
                    match mm.post_webhook(url, &post).await {
                        Ok(()) => Check { ok: true, line: format!("{name} (webhook {hook}): test post sent") },
                        Err(e) => Check { ok: false, line: format!("{name} (webhook {hook}): {}", fix_of(&e)) },
                    }
                }
            },
            (None, None) => Check { ok: false, line: format!("{name}: neither channel_id nor webhook") },
        };
        checks.push(Check { line: format!("{}{routes}", check.line), ..check });
    }
    checks
}

/// One channel the bot is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub team: String,
    pub name: String,
    pub id: String,
    pub private: bool,
}

/// The public and private channels the bot is a member of, in all its teams.
pub async fn list_channels(config: &Config) -> Result<Vec<ChannelRow>, MattermostError> {
    let Some(mm_config) = &config.mattermost else {
        return Err(MattermostError::Permanent {
            status: 0,
            id: String::new(),
            what: "no Mattermost is configured".into(),
            fix: "add a [mattermost] section with url and bot_token to klaxon.toml".into(),
        });
    };
    let mm = Mattermost::new(mm_config.url.clone(), mm_config.bot_token.clone());
    let mut rows = Vec::new();
    for team in mm.teams().await? {
        for c in mm.channels_in(&team.id).await? {
            if c.kind == "O" || c.kind == "P" {
                rows.push(ChannelRow { team: team.name.clone(), name: c.name, id: c.id, private: c.kind == "P" });
            }
        }
    }
    Ok(rows)
}
