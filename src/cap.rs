//! CAP 1.2 (OASIS Common Alerting Protocol) alerts as a province's warning system pushes
//! them: parsed and validated into an [`Alert`], every refusal naming the element.
//! Pure: no I/O, no clock (expiry is judged by the caller against its `now`). DTDs are
//! refused outright, so entity expansion cannot blow up memory.

use base64::Engine as _;
use chrono::{DateTime, FixedOffset};

/// The CAP 1.2 namespace; an alert in any other is refused.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// Most `<info>`, `<area>`, `<geocode>` and `<resource>` elements read, each.
const MAX_REPEATED: usize = 64;

/// A refused alert: which element, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element}: {message}")]
pub struct CapError {
    /// Path of the element, e.g. `alert/info[0]/expires`.
    pub element: String,
    pub message: String,
}

fn err(element: impl Into<String>, message: impl Into<String>) -> CapError {
    CapError {
        element: element.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Real: the only status that airs.
    Actual,
    Exercise,
    System,
    Test,
    Draft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Alert,
    /// Replaces the alerts named in `references`.
    Update,
    /// Ends the alerts named in `references`.
    Cancel,
    Ack,
    Error,
}

/// An earlier alert named in `<references>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub sender: String,
    pub identifier: String,
    pub sent: String,
}

/// An audio (or other) resource of an `<info>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub mime_type: String,
    pub uri: Option<String>,
    /// The embedded content (`<derefUri>`, base64), decoded.
    pub content: Option<Vec<u8>>,
}

impl Resource {
    pub fn is_audio(&self) -> bool {
        self.mime_type.starts_with("audio/")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub event: String,
    pub headline: Option<String>,
    pub expires: Option<DateTime<FixedOffset>>,
    /// Our area codes: the `<geocode>` values whose `<valueName>` is the configured one.
    pub area_codes: Vec<String>,
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub identifier: String,
    pub sender: String,
    pub sent: DateTime<FixedOffset>,
    pub status: Status,
    pub msg_type: MsgType,
    pub references: Vec<Reference>,
    pub infos: Vec<Info>,
}

impl Alert {
    /// Every area code the alert targets, in order, without duplicates.
    pub fn area_codes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for code in self.infos.iter().flat_map(|i| &i.area_codes) {
            if !out.contains(code) {
                out.push(code.clone());
            }
        }
        out
    }

    /// The first audio resource, if any.
    pub fn audio(&self) -> Option<&Resource> {
        self.infos
            .iter()
            .flat_map(|i| &i.resources)
            .find(|r| r.is_audio())
    }

    /// The latest `<expires>` of its infos (an alert without any never expires).
    pub fn expires(&self) -> Option<DateTime<FixedOffset>> {
        self.infos.iter().filter_map(|i| i.expires).max()
    }
}

/// A CAP date-time: `YYYY-MM-DDThh:mm:ss` with a numeric offset (`+07:00`; CAP 1.2
/// §3.3.2 forbids `Z`).
fn date_time(element: &str, text: &str) -> Result<DateTime<FixedOffset>, CapError> {
    let t = text.trim();
    let offset_ok = t.len() >= 6 && {
        let tail = &t.as_bytes()[t.len() - 6..];
        (tail[0] == b'+' || tail[0] == b'-') && tail[3] == b':'
    };
    if !offset_ok {
        return Err(err(
            element,
            format!("`{t}` needs a numeric offset such as +07:00 (CAP does not allow Z)"),
        ));
    }
    DateTime::parse_from_rfc3339(t)
        .map_err(|e| err(element, format!("`{t}` is not a CAP date-time ({e})")))
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(NAMESPACE)
    })
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(move |c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(NAMESPACE)
    })
}

fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.text().unwrap_or("").trim().to_string()
}

fn required(node: roxmltree::Node<'_, '_>, path: &str, name: &str) -> Result<String, CapError> {
    let element = format!("{path}/{name}");
    let value = child(node, name)
        .map(text_of)
        .ok_or_else(|| err(&element, "is required"))?;
    if value.is_empty() {
        return Err(err(&element, "must not be empty"));
    }
    Ok(value)
}

/// CAP identifiers and senders: no spaces, commas or markup characters (§3.2.1).
fn plain(element: &str, value: String) -> Result<String, CapError> {
    if value.len() > 256
        || value
            .chars()
            .any(|c| c.is_whitespace() || ",<&".contains(c))
    {
        return Err(err(
            element,
            "must be at most 256 characters without spaces, commas, < or &",
        ));
    }
    Ok(value)
}

/// Namespace declarations a CAP alert may carry in all (it needs one or two).
const MAX_NAMESPACE_DECLARATIONS: usize = 32;
/// Attributes one tag may carry (CAP elements carry none but namespaces).
const MAX_ATTRIBUTES_PER_TAG: usize = 64;

/// Refuses, in one linear pass, the shapes that make an XML parser slow: many namespace
/// declarations (each nested element re-scans those in scope) and many attributes on one
/// tag (the duplicate check is quadratic). A CAP alert is nowhere near either limit.
fn shape_limits(xml: &str) -> Result<(), CapError> {
    if xml.matches("xmlns").count() > MAX_NAMESPACE_DECLARATIONS {
        return Err(err(
            "alert",
            format!("more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations"),
        ));
    }
    let (mut in_tag, mut quote, mut attributes) = (false, None, 0usize);
    for b in xml.bytes() {
        match (in_tag, quote, b) {
            (_, Some(q), _) if b == q => quote = None,
            (_, Some(_), _) => {}
            (false, None, b'<') => {
                in_tag = true;
                attributes = 0;
            }
            (true, None, b'"' | b'\'') => quote = Some(b),
            (true, None, b'=') => {
                attributes += 1;
                if attributes > MAX_ATTRIBUTES_PER_TAG {
                    return Err(err(
                        "alert",
                        format!("a tag with more than {MAX_ATTRIBUTES_PER_TAG} attributes"),
                    ));
                }
            }
            (true, None, b'>') => in_tag = false,
            _ => {}
        }
    }
    Ok(())
}

/// Parses and validates one alert. `geocode_value_name` selects the `<geocode>` entries
/// that carry our area codes.
pub fn parse(xml: &str, geocode_value_name: &str) -> Result<Alert, CapError> {
    shape_limits(xml)?;
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| err("alert", format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "alert" {
        return Err(err(
            root.tag_name().name(),
            "the root element must be <alert>",
        ));
    }
    if root.tag_name().namespace() != Some(NAMESPACE) {
        return Err(err(
            "alert",
            format!("must be in the CAP 1.2 namespace {NAMESPACE}"),
        ));
    }
    let identifier = plain("alert/identifier", required(root, "alert", "identifier")?)?;
    let sender = plain("alert/sender", required(root, "alert", "sender")?)?;
    let sent = date_time("alert/sent", &required(root, "alert", "sent")?)?;
    let status = match required(root, "alert", "status")?.as_str() {
        "Actual" => Status::Actual,
        "Exercise" => Status::Exercise,
        "System" => Status::System,
        "Test" => Status::Test,
        "Draft" => Status::Draft,
        other => {
            return Err(err(
                "alert/status",
                format!("`{other}` is not one of Actual, Exercise, System, Test, Draft"),
            ));
        }
    };
    let msg_type = match required(root, "alert", "msgType")?.as_str() {
        "Alert" => MsgType::Alert,
        "Update" => MsgType::Update,
        "Cancel" => MsgType::Cancel,
        "Ack" => MsgType::Ack,
        "Error" => MsgType::Error,
        other => {
            return Err(err(
                "alert/msgType",
                format!("`{other}` is not one of Alert, Update, Cancel, Ack, Error"),
            ));
        }
    };
    match required(root, "alert", "scope")?.as_str() {
        "Public" | "Restricted" | "Private" => {}
        other => {
            return Err(err(
                "alert/scope",
                format!("`{other}` is not one of Public, Restricted, Private"),
            ));
        }
    }
    let references = match child(root, "references").map(text_of) {
        Some(text) => text
            .split_whitespace()
            .map(|triple| {
                let parts: Vec<&str> = triple.split(',').collect();
                match parts.as_slice() {
                    [sender, identifier, sent] => Ok(Reference {
                        sender: sender.to_string(),
                        identifier: identifier.to_string(),
                        sent: sent.to_string(),
                    }),
                    _ => Err(err(
                        "alert/references",
                        format!("`{triple}` is not sender,identifier,sent"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if matches!(msg_type, MsgType::Update | MsgType::Cancel) && references.is_empty() {
        return Err(err(
            "alert/references",
            "is required for Update and Cancel: it names the alerts they act on",
        ));
    }
    let mut infos = Vec::new();
    for (i, info) in children(root, "info").enumerate() {
        if i >= MAX_REPEATED {
            return Err(err("alert/info", format!("more than {MAX_REPEATED}")));
        }
        infos.push(parse_info(
            info,
            &format!("alert/info[{i}]"),
            geocode_value_name,
        )?);
    }
    Ok(Alert {
        identifier,
        sender,
        sent,
        status,
        msg_type,
        references,
        infos,
    })
}

fn parse_info(
    info: roxmltree::Node<'_, '_>,
    path: &str,
    value_name: &str,
) -> Result<Info, CapError> {
    for name in ["category", "urgency", "severity", "certainty"] {
        required(info, path, name)?;
    }
    let event = required(info, path, "event")?;
    let expires = child(info, "expires")
        .map(|e| date_time(&format!("{path}/expires"), &text_of(e)))
        .transpose()?;
    let mut area_codes = Vec::new();
    for (a, area) in children(info, "area").enumerate() {
        let apath = format!("{path}/area[{a}]");
        if a >= MAX_REPEATED {
            return Err(err(apath, format!("more than {MAX_REPEATED}")));
        }
        required(area, &apath, "areaDesc")?;
        for (g, geocode) in children(area, "geocode").enumerate() {
            let gpath = format!("{apath}/geocode[{g}]");
            if g >= MAX_REPEATED {
                return Err(err(gpath, format!("more than {MAX_REPEATED}")));
            }
            let name = required(geocode, &gpath, "valueName")?;
            let value = required(geocode, &gpath, "value")?;
            if name == value_name && !area_codes.contains(&value) {
                area_codes.push(value);
            }
        }
    }
    let mut resources = Vec::new();
    for (r, resource) in children(info, "resource").enumerate() {
        let rpath = format!("{path}/resource[{r}]");
        if r >= MAX_REPEATED {
            return Err(err(rpath, format!("more than {MAX_REPEATED}")));
        }
        required(resource, &rpath, "resourceDesc")?;
        let mime_type = required(resource, &rpath, "mimeType")?;
        let uri = child(resource, "uri")
            .map(text_of)
            .filter(|u| !u.is_empty());
        let content = child(resource, "derefUri")
            .map(|d| {
                let compact: String = text_of(d).split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|e| err(format!("{rpath}/derefUri"), format!("not base64 ({e})")))
            })
            .transpose()?;
        resources.push(Resource {
            mime_type,
            uri,
            content,
        });
    }
    Ok(Info {
        event,
        headline: child(info, "headline").map(text_of),
        expires,
        area_codes,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn alert(status: &str, msg_type: &str, extra: &str, info: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>VN-KTTV-2026-0042</identifier>
  <sender>canhbao@kttv.gov.vn</sender>
  <sent>2026-11-22T15:00:00+07:00</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {extra}
  {info}
</alert>"#
        )
    }

    pub(crate) const INFO: &str = r#"<info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>Bão số 9</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>2026-11-22T21:00:00+07:00</expires>
    <headline>Bão số 9 đổ bộ</headline>
    <resource>
      <resourceDesc>Thông báo</resourceDesc>
      <mimeType>audio/mpeg</mimeType>
      <derefUri>SUQz</derefUri>
    </resource>
    <area>
      <areaDesc>Xã Vĩnh Hòa</areaDesc>
      <geocode><valueName>loaxa</valueName><value>xa-vinh-hoa</value></geocode>
      <geocode><valueName>other</valueName><value>123</value></geocode>
    </area>
  </info>"#;

    #[test]
    fn an_actual_alert_gives_its_areas_audio_and_expiry() {
        let a = parse(&alert("Actual", "Alert", "", INFO), "loaxa").unwrap();
        assert_eq!(a.status, Status::Actual);
        assert_eq!(a.msg_type, MsgType::Alert);
        assert_eq!(a.identifier, "VN-KTTV-2026-0042");
        assert_eq!(a.area_codes(), ["xa-vinh-hoa"]);
        let audio = a.audio().unwrap();
        assert_eq!(audio.content.as_deref(), Some(&b"ID3"[..]));
        assert_eq!(
            a.expires().unwrap().to_rfc3339(),
            "2026-11-22T21:00:00+07:00"
        );
        assert_eq!(a.infos[0].event, "Bão số 9");
    }

    #[test]
    fn updates_and_cancels_name_what_they_act_on() {
        let refs = "<references>canhbao@kttv.gov.vn,VN-KTTV-2026-0041,2026-11-22T14:00:00+07:00</references>";
        let a = parse(&alert("Actual", "Cancel", refs, ""), "loaxa").unwrap();
        assert_eq!(a.references[0].identifier, "VN-KTTV-2026-0041");
        let missing = parse(&alert("Actual", "Update", "", INFO), "loaxa").unwrap_err();
        assert_eq!(missing.element, "alert/references");
    }

    #[test]
    fn malformed_alerts_name_the_element() {
        let cases = [
            (
                alert("Actual", "Alert", "", INFO).replace("cap:1.2", "cap:1.1"),
                "alert",
            ),
            (alert("Real", "Alert", "", INFO), "alert/status"),
            (alert("Actual", "Shout", "", INFO), "alert/msgType"),
            (
                alert("Actual", "Alert", "", INFO).replace("+07:00</sent>", "Z</sent>"),
                "alert/sent",
            ),
            (
                alert("Actual", "Alert", "", INFO)
                    .replace("<identifier>VN-KTTV-2026-0042</identifier>", ""),
                "alert/identifier",
            ),
            (
                alert("Actual", "Alert", "", INFO).replace("<severity>Extreme</severity>", ""),
                "alert/info[0]/severity",
            ),
            (
                alert("Actual", "Alert", "", INFO).replace("SUQz", "!!!"),
                "alert/info[0]/resource[0]/derefUri",
            ),
            (
                alert("Actual", "Alert", "", INFO).replace("2026-11-22T21:00:00+07:00", "tomorrow"),
                "alert/info[0]/expires",
            ),
            ("<alert".to_string(), "alert"),
            ("<html><body>502</body></html>".to_string(), "html"),
        ];
        for (xml, element) in cases {
            let e = parse(&xml, "loaxa").unwrap_err();
            assert_eq!(e.element, element, "{e}");
        }
    }

    #[test]
    fn a_dtd_is_refused_so_entities_cannot_expand() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol2;</identifier></alert>"#;
        assert!(parse(bomb, "loaxa").is_err());
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let valid = alert("Actual", "Alert", "", INFO);
        for _ in 0..3000 {
            let mut bytes = valid.clone().into_bytes();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[i] = rng.random(),
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, "loaxa");
        }
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn namespace_and_attribute_bombs_are_refused_at_once() {
        let deep: String = (0..2000).map(|i| format!("<x xmlns:p{i}=\"u\">")).collect();
        let bomb = format!(
            "<alert xmlns=\"{NAMESPACE}\">{deep}{}</alert>",
            "</x>".repeat(2000)
        );
        let started = std::time::Instant::now();
        assert!(parse(&bomb, "loaxa").is_err());
        let wide: String = (0..20_000).map(|i| format!(" a{i}=\"\"")).collect();
        assert!(parse(&format!("<alert{wide} xmlns=\"{NAMESPACE}\"/>"), "loaxa").is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
