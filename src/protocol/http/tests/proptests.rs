//! Property tests: generated request heads, with header names in random case and order,
//! parse to exactly the fields they were built from.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;

use crate::protocol::http::*;

/// A header value with no surrounding whitespace, as the parser returns it after trimming.
fn value() -> impl Strategy<Value = String> {
    "[!-~]([ !-~]{0,30}[!-~])?"
}

/// `name` with each ASCII letter upper- or lower-cased by `flips`.
fn random_case(name: &str, flips: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if flips >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Generated {
    method: String,
    path: String,
    query: Option<String>,
    /// (name as it should be matched, value); names are written in random case.
    headers: Vec<(String, String)>,
    case_flips: Vec<u64>,
    upgrade_tokens: Option<Vec<String>>,
    connection_tokens: Option<Vec<String>>,
    content_length: Option<u32>,
    /// Content-Length repeated with the same value (allowed).
    content_length_twice: bool,
}

fn tokens(wanted: &'static str) -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![Just(wanted), Just("keep-alive"), Just("h2c"), Just("foo")],
        1..4,
    )
    .prop_flat_map(|words| {
        let n = words.len();
        (Just(words), vec(any::<u64>(), n), vec("[ \t]{0,2}", n)).prop_map(|(words, flips, pads)| {
            words
                .iter()
                .zip(flips)
                .zip(pads)
                .map(|((w, f), pad)| format!("{pad}{}", random_case(w, f)))
                .collect()
        })
    })
}

fn request() -> impl Strategy<Value = Generated> {
    let known = subsequence(
        vec![
            "host",
            "sec-websocket-key",
            "sec-websocket-version",
            "origin",
            "x-forwarded-for",
            "authorization",
        ],
        0..=6,
    );
    let extra = vec(("x-extra-[a-z0-9]{1,8}", value()), 0..6);
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE"),
            Just("OPTIONS")
        ],
        "/[a-zA-Z0-9/_.~-]{0,40}",
        proptest::option::of("[a-zA-Z0-9=&_.%~-]{0,40}"),
        (known, vec(value(), 6)),
        extra,
        proptest::option::of(tokens("websocket")),
        proptest::option::of(tokens("upgrade")),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        (vec(any::<u64>(), 16), any::<u64>()),
    )
        .prop_map(
            |(
                method,
                path,
                query,
                (known, values),
                extra,
                upgrade,
                connection,
                cl,
                twice,
                (flips, order),
            )| {
                let mut headers: Vec<(String, String)> = known
                    .into_iter()
                    .zip(values)
                    .map(|(n, v)| (n.to_owned(), v))
                    .chain(extra)
                    .collect();
                // A deterministic shuffle from `order`, so the order shrinks with the input.
                let len = headers.len();
                for i in (1..len).rev() {
                    let j = (order.rotate_left(i as u32) as usize) % (i + 1);
                    headers.swap(i, j);
                }
                Generated {
                    method: method.to_owned(),
                    path,
                    query,
                    headers,
                    case_flips: flips,
                    upgrade_tokens: upgrade,
                    connection_tokens: connection,
                    content_length: cl,
                    content_length_twice: twice,
                }
            },
        )
}

impl Generated {
    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {}", self.method, self.path);
        if let Some(q) = &self.query {
            head.push('?');
            head.push_str(q);
        }
        head.push_str(" HTTP/1.1\r\n");
        let mut lines: Vec<(String, String)> = self.headers.clone();
        if let Some(t) = &self.upgrade_tokens {
            lines.push(("upgrade".into(), t.join(",").trim().to_owned()));
        }
        if let Some(t) = &self.connection_tokens {
            lines.insert(
                lines.len() / 2,
                ("connection".into(), t.join(",").trim().to_owned()),
            );
        }
        if let Some(n) = self.content_length {
            lines.insert(0, ("content-length".into(), n.to_string()));
            if self.content_length_twice {
                lines.push(("Content-Length".into(), n.to_string()));
            }
        }
        for (i, (name, value)) in lines.iter().enumerate() {
            let name = random_case(name, self.case_flips[i % self.case_flips.len()]);
            // Optional whitespace around values is not part of them (RFC 9110 5.5).
            let pad = ["", " ", "\t", " \t "][(self.case_flips[0] >> (i % 32) & 3) as usize];
            head.push_str(&format!("{name}:{pad}{value}{pad}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn has(tokens: &Option<Vec<String>>, wanted: &str) -> bool {
    tokens
        .as_ref()
        .is_some_and(|t| t.iter().any(|w| w.trim().eq_ignore_ascii_case(wanted)))
}

proptest! {
    #[test]
    fn generated_requests_parse_to_their_fields(generated in request()) {
        let bytes = generated.to_bytes();
        let request = parse_request(&bytes, bytes.len()).unwrap().unwrap();
        prop_assert_eq!(request.method, generated.method.as_str());
        prop_assert_eq!(request.path, generated.path.as_str());
        prop_assert_eq!(request.query, generated.query.as_deref().unwrap_or(""));
        prop_assert_eq!(request.header_len, bytes.len());
        prop_assert_eq!(request.content_length, generated.content_length.map_or(0, |n| n as usize));
        prop_assert_eq!(request.upgrade_websocket, has(&generated.upgrade_tokens, "websocket"));
        prop_assert_eq!(request.connection_upgrade, has(&generated.connection_tokens, "upgrade"));
        prop_assert_eq!(request.ws_key, generated.header("sec-websocket-key"));
        prop_assert_eq!(request.ws_version, generated.header("sec-websocket-version"));
        prop_assert_eq!(request.origin, generated.header("origin"));
        prop_assert_eq!(request.x_forwarded_for, generated.header("x-forwarded-for"));
        prop_assert_eq!(request.authorization, generated.header("authorization"));
    }

    #[test]
    fn truncated_heads_are_incomplete_or_too_large(generated in request(), cut in any::<usize>()) {
        let bytes = generated.to_bytes();
        // Every strict prefix lacks the final CRLFCRLF (no header line is empty).
        let cut = cut % bytes.len();
        prop_assert_eq!(parse_request(&bytes[..cut], bytes.len()), Ok(None));
        // Over the limit, even incomplete, the head is refused rather than buffered.
        if cut > 0 {
            prop_assert_eq!(
                parse_request(&bytes[..cut], cut - 1),
                Err(Error::HeadersTooLarge { max: cut - 1 })
            );
        }
        prop_assert_eq!(
            parse_request(&bytes, bytes.len() - 1),
            Err(Error::HeadersTooLarge { max: bytes.len() - 1 })
        );
    }

    #[test]
    fn query_param_finds_the_first_value(
        pairs in vec(("[a-z]{1,3}", "[a-zA-Z0-9._%-]{0,8}"), 0..8),
        name in "[a-z]{1,3}",
    ) {
        let query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let expected = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        prop_assert_eq!(query_param(&query, &name), expected);
        let with_mark = format!("?{query}");
        prop_assert_eq!(query_param(&with_mark, &name), expected);
    }
}
