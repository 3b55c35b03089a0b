//! Mirrored replies: what people write in an incident's channel goes into its timeline, once
//! per post, with author and time, so `/incident status` and the retrospective show it.
//!
//! Outgoing webhooks fire only in public channels and each is bound to one channel or to
//! trigger words (mattermost.md §1.2), so they cannot follow private, per-incident channels.
//! So the bot reads each open incident's channel itself ([`ChannelReader`]: on the scheduled
//! tick on AWS, every few seconds in `klaxon serve`), from a cursor kept on the incident.
//! `POST /chatops/mirror` (an outgoing webhook) feeds the same [`Incidents::mirror`] for public
//! channels. Either way a post already in the timeline is skipped, so a restart, an overlap
//! between the two, or a webhook that fires twice adds nothing twice.

use super::service::{Incidents, IncidentsError};
use crate::domain::{Actor, Incident};
use crate::mattermost::{Mattermost, MattermostError, Post};
use crate::repo::RepoError;
use std::collections::HashMap;

/// A channel message to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub post_id: String,
    pub user_id: String,
    pub user_name: String,
    pub text: String,
    pub at: jiff::Timestamp,
}

/// Each mirrored message is cut to this many characters.
pub const MAX_TEXT: usize = 1000;
/// An incident keeps at most this many mirrored messages (its record must stay well under the
/// store's 400 KB item limit); the rest of a long discussion stays in the channel.
pub const MAX_MIRRORED: usize = 500;
/// Posts edited up to this long before the cursor are read again, in case one was saved with
/// an older `update_at` than a post already read; the post id keeps them from being added twice.
const OVERLAP_MS: i64 = 2000;

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_TEXT - 1).collect();
    short.push('…');
    short
}

impl Incidents {
    /// Adds the messages not yet in the incident's timeline, and moves its read cursor to
    /// `cursor` (when given and newer). Returns how many messages were added.
    pub async fn mirror(
        &self,
        number: u64,
        messages: &[Message],
        cursor: Option<i64>,
    ) -> Result<usize, IncidentsError> {
        for _ in 0..10 {
            let Some(read) = self.repo().get(number).await? else { return Ok(0) };
            let mut incident = read.value.clone();
            let mut added = 0;
            for m in messages {
                if incident.mirrored() >= MAX_MIRRORED {
                    break;
                }
                if incident.mirror(&m.post_id, Actor::user(&m.user_id, &m.user_name), m.at, cut(&m.text)) {
                    added += 1;
                }
            }
            let new_cursor = cursor.filter(|c| incident.mirrored_until.is_none_or(|old| *c > old));
            if let Some(c) = new_cursor {
                incident.mirrored_until = Some(c);
            }
            if added == 0 && new_cursor.is_none() {
                return Ok(0);
            }
            match self.repo().update(&read, &incident, vec![]).await {
                Ok(()) => return Ok(added),
                Err(RepoError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IncidentsError::Busy { incident: format!("incident {number}"), tries: 10 })
    }
}

/// Whether a post is something a person wrote (not the bot, not a system message, not an
/// integration's answer, not deleted).
pub fn is_human(post: &Post, bot_user_id: &str) -> bool {
    let prop = |k: &str| post.props.get(k).and_then(|v| v.as_str()) == Some("true");
    post.user_id != bot_user_id
        && post.kind.is_empty()
        && post.delete_at == 0
        && !prop("from_bot")
        && !prop("from_webhook")
        && !post.message.trim().is_empty()
}

/// Reads the open incidents' channels as the bot.
pub struct ChannelReader {
    pub incidents: Incidents,
    pub mattermost: Mattermost,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    pub channels: usize,
    pub added: usize,
    /// Channels that could not be read now (they are read again on the next tick).
    pub failed: Vec<String>,
}

impl ChannelReader {
    /// One pass over every open incident with a channel.
    pub async fn read_all(&self) -> Result<ReadReport, IncidentsError> {
        let mut report = ReadReport::default();
        let bot = match self.mattermost.me().await {
            Ok(me) => me.id,
            Err(e) => {
                report.failed.push(format!("who the bot is: {e}"));
                return Ok(report);
            }
        };
        let mut names: HashMap<String, String> = HashMap::new();
        for incident in self.incidents.repo().open().await? {
            let Some(channel) = incident.channel_id.clone() else { continue };
            report.channels += 1;
            match self.read_one(&incident, &channel, &bot, &mut names).await {
                Ok(n) => report.added += n,
                Err(e) => {
                    tracing::warn!(incident_id = %incident.id, error = %e, "could not read the incident channel; the next tick tries again");
                    report.failed.push(format!("{}: {e}", incident.id));
                }
            }
        }
        Ok(report)
    }

    async fn read_one(
        &self,
        incident: &Incident,
        channel: &str,
        bot: &str,
        names: &mut HashMap<String, String>,
    ) -> Result<usize, ReadError> {
        let since = incident.mirrored_until.unwrap_or(incident.started_at.as_millisecond()) - OVERLAP_MS;
        let posts = self.mattermost.posts_since(channel, since).await?;
        let Some(newest) = posts.iter().map(|p| p.update_at).max() else { return Ok(0) };
        let mut messages = Vec::new();
        for p in posts.iter().filter(|p| is_human(p, bot)) {
            if !names.contains_key(&p.user_id) {
                let name = match self.mattermost.user(&p.user_id).await {
                    Ok(Some(u)) => u.username,
                    _ => p.user_id.clone(),
                };
                names.insert(p.user_id.clone(), name);
            }
            messages.push(Message {
                post_id: p.id.clone(),
                user_id: p.user_id.clone(),
                user_name: names.get(&p.user_id).cloned().unwrap_or_default(),
                text: p.message.clone(),
                at: jiff::Timestamp::from_millisecond(p.create_at).unwrap_or_else(|_| jiff::Timestamp::now()),
            });
        }
        Ok(self.incidents.mirror(incident.id.number, &messages, Some(newest)).await?)
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Mattermost(#[from] MattermostError),
    #[error(transparent)]
    Incidents(#[from] IncidentsError),
}
