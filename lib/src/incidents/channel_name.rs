//! Incident channel names, from `incidents.channel_name_template`, by Mattermost's rules
//! (mattermost.md §4.5): lowercase `a-z`, `0-9`, `-`, `_`; at most 64 characters; start and end
//! with a letter or digit (what servers since 2021 require; current ones also accept a trailing
//! `-`, so ending alphanumeric satisfies both); never `__` (the shape of direct-message names) and
//! never 40 hex characters.

use crate::domain::Incident;

pub const MAX_NAME: usize = 64;
pub const MAX_DISPLAY_NAME: usize = 64;

/// Keeps `a-z0-9`; every run of anything else (spaces, punctuation, non-Latin letters) becomes
/// one `-`. Latin letters with accents lose them (`é` → `e`) so "Dépôt en panne" stays readable.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = fold_accent(c);
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('-');
            }
            out.push(c);
            gap = false;
        } else {
            gap = true;
        }
    }
    out
}

const ACCENTED: &str = "àáâãäåāăąçćčďèéêëēėęěìíîïīįłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż";
const UNACCENTED: &str = "aaaaaaaaacccdeeeeeeeeiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz";

/// The common Latin letters with diacritics, as their base letter; anything else unchanged.
fn fold_accent(c: char) -> char {
    ACCENTED.chars().position(|f| f == c).and_then(|i| UNACCENTED.chars().nth(i)).unwrap_or(c)
}

/// Makes any string a valid channel name: only allowed characters, no runs of separators,
/// alphanumeric at both ends, at most `max` characters.
fn sanitize(raw: &str, max: usize) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase).map(fold_accent) {
        let c = if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' };
        let last = out.chars().last();
        let separator = |x: char| x == '-' || x == '_';
        if separator(c) && (last.is_none() || last.is_some_and(separator)) {
            continue;
        }
        out.push(c);
    }
    out.truncate(max);
    out.trim_end_matches(['-', '_']).to_string()
}

/// The channel name for an incident: the template filled in, the title shortened so that the
/// name fits in `max` characters. A title with no Latin letters or digits leaves the id alone
/// (`inc-7`).
pub fn channel_name(template: &str, incident: &Incident, max: usize) -> String {
    let fill = |title: &str| {
        template
            .replace("{seq}", &incident.id.number.to_string())
            .replace("{prefix}", &incident.id.prefix.to_lowercase())
            .replace("{severity}", &incident.severity.to_lowercase())
            .replace("{title}", title)
    };
    let title = slug(&incident.title);
    let without_title = sanitize(&fill(""), usize::MAX).len();
    let room = max.saturating_sub(without_title + 1);
    let mut short = title.chars().take(room).collect::<String>();
    while short.ends_with('-') {
        short.pop();
    }
    let mut name = sanitize(&fill(&short), max);
    if name.len() < 2 || (name.len() == 40 && name.chars().all(|c| c.is_ascii_hexdigit())) {
        name = sanitize(&format!("{}-{}", incident.id.prefix, incident.id.number), max);
    }
    name
}

/// The name to try after `attempt` clashes (attempt 0 is the name itself): `-2`, `-3`, ...,
/// shortening the name so the suffix fits.
pub fn with_suffix(name: &str, attempt: u32, max: usize) -> String {
    if attempt == 0 {
        return name.to_string();
    }
    let suffix = format!("-{}", attempt + 1);
    let mut base: String = name.chars().take(max.saturating_sub(suffix.len())).collect();
    while base.ends_with(['-', '_']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// "INC-7: Checkout is down", at most 64 characters.
pub fn display_name(incident: &Incident) -> String {
    let full = format!("{}: {}", incident.id, incident.title.trim());
    if full.chars().count() <= MAX_DISPLAY_NAME {
        return full;
    }
    let mut short: String = full.chars().take(MAX_DISPLAY_NAME - 1).collect();
    short.push('…');
    short
}

/// Whether a name passes Mattermost's current and 2021 identifier rules.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() >= 2
        && b.len() <= MAX_NAME
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
        && !name.contains("__")
        && !(b.len() == 40 && b.iter().all(u8::is_ascii_hexdigit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, IncidentId, NewIncident};
    use proptest::prelude::*;

    fn incident(n: u64, title: &str) -> Incident {
        Incident::declare(
            NewIncident {
                id: IncidentId::new("INC", n),
                title: title.into(),
                severity: "SEV2".into(),
                summary: String::new(),
                commander: None,
                fields: Default::default(),
                private: false,
            },
            Actor::user("u1", "alice"),
            jiff::Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn every_accented_letter_has_its_base_letter() {
        assert_eq!(ACCENTED.chars().count(), UNACCENTED.chars().count());
        assert_eq!(slug("Ça Ł ž"), "ca-l-z");
    }

    #[test]
    fn the_template_is_filled_and_made_valid() {
        let i = incident(7, "Checkout is DOWN!! (EU)");
        assert_eq!(channel_name("inc-{seq}-{title}", &i, MAX_NAME), "inc-7-checkout-is-down-eu");
        assert_eq!(channel_name("{prefix}_{seq}_{severity}", &i, MAX_NAME), "inc_7_sev2");
        assert_eq!(channel_name("inc-{seq}-{title}", &incident(8, "Dépôt en panne"), MAX_NAME), "inc-8-depot-en-panne");
    }

    #[test]
    fn a_title_without_latin_letters_leaves_the_id() {
        assert_eq!(channel_name("inc-{seq}-{title}", &incident(9, "障害が発生"), MAX_NAME), "inc-9");
        assert_eq!(channel_name("{title}", &incident(9, "障害"), MAX_NAME), "inc-9");
    }

    #[test]
    fn long_titles_are_cut_at_64_without_a_trailing_dash() {
        let i = incident(123, &"database replica lag ".repeat(10));
        let name = channel_name("inc-{seq}-{title}", &i, MAX_NAME);
        assert!(name.len() <= 64 && name.starts_with("inc-123-database-replica"), "{name}");
        assert!(is_valid(&name), "{name}");
    }

    #[test]
    fn clashes_get_a_numbered_suffix_that_still_fits() {
        assert_eq!(with_suffix("inc-7-db", 1, MAX_NAME), "inc-7-db-2");
        let long = "a".repeat(64);
        let next = with_suffix(&long, 9, MAX_NAME);
        assert_eq!(next.len(), 64);
        assert!(next.ends_with("-10"));
    }

    #[test]
    fn the_2021_and_current_rules_are_both_met() {
        assert!(!is_valid("inc-7-"), "2021 servers need an alphanumeric end");
        assert!(!is_valid("a"), "2021 servers need two characters");
        assert!(!is_valid("ab__cd"));
        assert!(!is_valid(&"a".repeat(40).replace('a', "f")));
        assert!(is_valid("inc-7"));
    }

    #[test]
    fn display_names_fit_in_64() {
        let d = display_name(&incident(1, &"x".repeat(100)));
        assert_eq!(d.chars().count(), 64);
        assert!(d.starts_with("INC-1: xxx") && d.ends_with('…'));
    }

    proptest! {
        #[test]
        fn any_title_and_template_gives_a_valid_name(title in "\\PC{0,120}", tpl in "[a-z{}_ -]{0,10}\\{seq\\}[a-z{}_ -]{0,10}(\\{title\\})?") {
            let name = channel_name(&tpl, &incident(42, &title), MAX_NAME);
            prop_assert!(is_valid(&name), "{name:?} from {tpl:?} / {title:?}");
            for n in 1..12 {
                prop_assert!(is_valid(&with_suffix(&name, n, MAX_NAME)));
            }
        }
    }
}
