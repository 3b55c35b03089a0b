//! Summary, details and dedup-key templates: `{{name}}` or `{{{name}}}` placeholders over a flat
//! set of variables plus dotted paths into JSON (`{{data.temp}}`, `{{data.sensors.0.id}}`).
//! Values are not HTML-escaped (these are chat messages and keys, not HTML). A missing variable
//! renders as nothing: a template never fails a request.

use serde_json::Value;
use std::collections::BTreeMap;

/// The variables a template sees.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub values: BTreeMap<String, Value>,
}

impl Vars {
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.values.insert(name.to_string(), value.into());
    }

    /// Looks up `a.b.0.c`: the longest variable name that matches a prefix, then a JSON path.
    pub fn lookup(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.values.get(path) {
            return Some(v);
        }
        let mut split = path.len();
        while let Some(dot) = path[..split].rfind('.') {
            if let Some(root) = self.values.get(&path[..dot]) {
                return path[dot + 1..].split('.').try_fold(root, |v, key| match v {
                    Value::Object(m) => m.get(key),
                    Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            split = dot;
        }
        None
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn render(template: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let triple = rest[open..].starts_with("{{{");
        let (start, close_tag) = if triple { (open + 3, "}}}") } else { (open + 2, "}}") };
        match rest[start..].find(close_tag) {
            Some(len) => {
                let name = rest[start..start + len].trim();
                if let Some(v) = vars.lookup(name) {
                    out.push_str(&text(v));
                }
                rest = &rest[start + len + close_tag.len()..];
            }
            None => {
                // Config validation refuses unclosed placeholders; keep the text if one slips by.
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set("event", "ALERT");
        v.set("coreid", "e00fce68");
        v.set("data", json!({"temp": -3.5, "door": {"open": true}, "sensors": [{"id": "s1"}]}));
        v
    }

    #[test]
    fn renders_plain_and_dotted_placeholders() {
        let v = vars();
        assert_eq!(render("{{event}} from {{ coreid }}: {{data.temp}} °C", &v), "ALERT from e00fce68: -3.5 °C");
        assert_eq!(render("{{{data.door.open}}} {{data.sensors.0.id}}", &v), "true s1");
        assert_eq!(render("{{data}}", &v), r#"{"door":{"open":true},"sensors":[{"id":"s1"}],"temp":-3.5}"#);
    }

    #[test]
    fn missing_variables_render_as_nothing() {
        let v = vars();
        assert_eq!(render("[{{data.humidity}}][{{nope}}][{{data.sensors.9.id}}][{{event.x}}]", &v), "[][][][]");
    }

    #[test]
    fn text_without_placeholders_and_unclosed_braces_stay_as_written() {
        let v = vars();
        assert_eq!(render("no placeholders", &v), "no placeholders");
        assert_eq!(render("broken {{event", &v), "broken {{event");
    }
}
