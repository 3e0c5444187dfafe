//! The notification rules and the request parsing: plain Rust, no FFI, unit
//! tested by `cargo test`.

/// Who a notification is for, relative to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Guest,
    Host,
}

/// One notification to store for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub role: Role,
    pub user: String,
    pub kind: &'static str,
    pub title: &'static str,
}

/// What the rules need of an event (all from its `data`).
#[derive(Debug, Default, Clone)]
pub struct EventFacts<'a> {
    pub topic: &'a str,
    pub type_: &'a str,
    pub guest_id: Option<&'a str>,
    pub host_id: Option<&'a str>,
    pub payer_id: Option<&'a str>,
    pub amount: Option<i64>,
}

fn note(role: Role, user: Option<&str>, kind: &'static str, title: &'static str) -> Option<Note> {
    match user {
        Some(u) if id_ok(u) => Some(Note { role, user: u.to_string(), kind, title }),
        _ => None,
    }
}

/// The notifications an event gives (possibly none). Err when an event of a
/// type we act on lacks the user it is for (a poison event).
pub fn notes_for(e: &EventFacts) -> Result<Vec<Note>, String> {
    let notes: Vec<Option<Note>> = match (e.topic, e.type_) {
        ("bearbnb.reservation", "ReservationConfirmed") => vec![
            note(Role::Guest, e.guest_id, "BOOKING_CONFIRMED", "Your booking is confirmed"),
            note(Role::Host, e.host_id, "NEW_BOOKING", "Your room has a new booking"),
        ],
        ("bearbnb.reservation", "ReservationCancelled") => vec![
            note(Role::Guest, e.guest_id, "CANCELLATION_DONE", "Your booking is cancelled"),
            note(Role::Host, e.host_id, "BOOKING_CANCELLED", "A booking of your room was cancelled"),
        ],
        ("bearbnb.payment", "PaymentDeclined") => {
            vec![note(Role::Guest, e.payer_id, "PAYMENT_DECLINED", "Your payment was declined")]
        }
        // a refund of nothing (a voided payment) is not news
        ("bearbnb.payment", "PaymentCancelled") if e.amount != Some(0) => {
            vec![note(Role::Guest, e.payer_id, "REFUND_MADE", "Your refund was made")]
        }
        _ => return Ok(Vec::new()),
    };
    let n = notes.len();
    let out: Vec<Note> = notes.into_iter().flatten().collect();
    if out.len() != n {
        return Err(format!("{} without the string ids of the users to notify", e.type_));
    }
    Ok(out)
}

/// The document id of the notification of event `event_id` for `role`: one
/// per (event, user), so a redelivered event finds it and changes nothing.
pub fn note_id(event_id: &str, role: Role) -> String {
    format!("{}-{}", event_id, if role == Role::Guest { "g" } else { "h" })
}

/// Ids as the C plugins accept them (bnb_util_id_ok): 1..64 of [A-Za-z0-9_-].
pub fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub const PAGE_DEFAULT: usize = 20;
pub const PAGE_MAX: usize = 100;

/// A 400 naming the parameter.
#[derive(Debug, PartialEq, Eq)]
pub struct BadParam {
    pub param: String,
    pub detail: String,
}

fn bad(param: &str, detail: String) -> BadParam {
    BadParam { param: param.to_string(), detail }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding ('+' is a space); None when broken or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let v = hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// GET /notifications parameters: `limit` (1..100, default 20) and `cursor`
/// (opaque, from the previous page's `next`). Every other name, a repeat or
/// broken percent-encoding is a 400 naming the parameter.
pub fn parse_page_query(raw: Option<&str>) -> Result<(usize, Option<String>), BadParam> {
    let mut limit: Option<String> = None;
    let mut cursor: Option<String> = None;
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.find('=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, ""),
        };
        let shown: String = name.chars().take(64).collect();
        let slot = match name {
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            _ => return Err(bad(&shown, format!("unknown query parameter '{}'", shown))),
        };
        if slot.is_some() {
            return Err(bad(name, format!("query parameter '{}' is given more than once", name)));
        }
        match percent_decode(value) {
            Some(v) => *slot = Some(v),
            None => return Err(bad(name, format!("query parameter '{}' is not well percent-encoded", name))),
        }
    }
    let n = match limit {
        None => PAGE_DEFAULT,
        Some(v) => {
            let ok = !v.is_empty() && v.len() <= 4 && v.bytes().all(|c| c.is_ascii_digit());
            let n: usize = if ok { v.parse().unwrap_or(0) } else { 0 };
            if n < 1 || n > PAGE_MAX {
                return Err(bad("limit", format!("query parameter 'limit' must be an integer from 1 to {}", PAGE_MAX)));
            }
            n
        }
    };
    if let Some(c) = &cursor {
        if c.is_empty() || c.len() > 1024 {
            return Err(bad("cursor", "query parameter 'cursor' is not a cursor of this list".to_string()));
        }
    }
    Ok((n, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(topic: &'a str, t: &'a str) -> EventFacts<'a> {
        EventFacts {
            topic,
            type_: t,
            guest_id: Some("gus"),
            host_id: Some("hal"),
            payer_id: Some("gus"),
            amount: Some(3600),
        }
    }

    #[test]
    fn confirmed_tells_guest_and_host() {
        let n = notes_for(&facts("bearbnb.reservation", "ReservationConfirmed")).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].role, n[0].user.as_str(), n[0].kind), (Role::Guest, "gus", "BOOKING_CONFIRMED"));
        assert_eq!((n[1].role, n[1].user.as_str(), n[1].kind), (Role::Host, "hal", "NEW_BOOKING"));
    }

    #[test]
    fn cancelled_tells_guest_and_host() {
        let n = notes_for(&facts("bearbnb.reservation", "ReservationCancelled")).unwrap();
        let kinds: Vec<&str> = n.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, vec!["CANCELLATION_DONE", "BOOKING_CANCELLED"]);
        assert_eq!(n[1].user, "hal");
    }

    #[test]
    fn payments_tell_the_payer() {
        let n = notes_for(&facts("bearbnb.payment", "PaymentDeclined")).unwrap();
        assert_eq!(
            n,
            vec![Note { role: Role::Guest, user: "gus".into(), kind: "PAYMENT_DECLINED", title: n[0].title }]
        );
        let n = notes_for(&facts("bearbnb.payment", "PaymentCancelled")).unwrap();
        assert_eq!(n[0].kind, "REFUND_MADE");
        let mut voided = facts("bearbnb.payment", "PaymentCancelled");
        voided.amount = Some(0);
        assert!(notes_for(&voided).unwrap().is_empty());
    }

    #[test]
    fn other_events_are_ignored() {
        for (topic, t) in [
            ("bearbnb.reservation", "ReservationPlaced"),
            ("bearbnb.reservation", "ReservationRejected"),
            ("bearbnb.reservation", "ReservationCancelRequested"),
            ("bearbnb.payment", "PaymentApproved"),
            ("bearbnb.payment", "ReservationConfirmed"),
            ("bearbnb.room", "RoomRegistered"),
        ] {
            assert!(notes_for(&facts(topic, t)).unwrap().is_empty(), "{} {}", topic, t);
        }
    }

    #[test]
    fn missing_or_bad_user_is_poison() {
        let mut f = facts("bearbnb.reservation", "ReservationConfirmed");
        f.host_id = None;
        assert!(notes_for(&f).is_err());
        let mut f = facts("bearbnb.payment", "PaymentDeclined");
        f.payer_id = Some("a b");
        assert!(notes_for(&f).is_err());
        let mut f = facts("bearbnb.room", "RoomRegistered");
        f.guest_id = None;
        assert!(notes_for(&f).unwrap().is_empty());
    }

    #[test]
    fn ids() {
        assert_eq!(note_id("0d5c-11", Role::Guest), "0d5c-11-g");
        assert_eq!(note_id("0d5c-11", Role::Host), "0d5c-11-h");
        assert!(id_ok(&note_id("3f0a8a5e-1b7e-4c57-9c1e-8f0f7d0a9b12", Role::Host)));
        assert!(!id_ok(""));
        assert!(!id_ok("a/b"));
        assert!(!id_ok(&"x".repeat(65)));
    }

    #[test]
    fn page_query() {
        assert_eq!(parse_page_query(None), Ok((20, None)));
        assert_eq!(parse_page_query(Some("")), Ok((20, None)));
        assert_eq!(parse_page_query(Some("limit=5")), Ok((5, None)));
        assert_eq!(parse_page_query(Some("limit=100&cursor=a%2Bb")), Ok((100, Some("a+b".to_string()))));
        assert_eq!(parse_page_query(Some("cursor=x+y")), Ok((20, Some("x y".to_string()))));
        for bad_limit in ["limit=0", "limit=101", "limit=abc", "limit=", "limit=-1", "limit=99999", "limit=1.5"] {
            assert_eq!(parse_page_query(Some(bad_limit)).unwrap_err().param, "limit", "{}", bad_limit);
        }
        assert_eq!(parse_page_query(Some("limit=1&limit=2")).unwrap_err().param, "limit");
        assert_eq!(parse_page_query(Some("cursor=")).unwrap_err().param, "cursor");
        assert_eq!(parse_page_query(Some("cursor=%zz")).unwrap_err().param, "cursor");
        assert_eq!(parse_page_query(Some("cursor=%4")).unwrap_err().param, "cursor");
        let e = parse_page_query(Some("limit=2&sort=asc")).unwrap_err();
        assert_eq!(e.param, "sort");
        assert!(e.detail.contains("'sort'"));
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%20b%C3%A9").as_deref(), Some("a bé"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%ff"), None); // not UTF-8
    }
}
