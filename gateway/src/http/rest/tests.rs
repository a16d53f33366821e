//! Request parsing and statement building, without a database: every filter, bad
//! identifiers, injection attempts in every position, bodies and content types.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Method;

use super::catalog::{Arg, Catalog, Column, Function, Returns, Table, Volatility};
use super::error::ApiError;
use super::parse::{
    parse, Accept, ApiRequest, CmpOp, Condition, Filter, IsValue, Op, OrderTerm, RawRequest,
    Return, SelectItem, Settings, Target, Verb,
};
use super::sql::{self, Kind, Param, Shape, Statement};
use super::{plan, rpc};

fn schemas() -> Vec<String> {
    vec!["public".into(), "api".into()]
}

fn try_req(
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<ApiRequest, ApiError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let s = schemas();
    parse(
        &RawRequest {
            method: &method,
            path,
            query,
            headers: &map,
            body: body.as_bytes(),
        },
        &Settings { schemas: &s },
    )
}

fn get(path_and_query: &str) -> ApiRequest {
    try_req(Method::GET, path_and_query, &[], "").unwrap_or_else(|e| panic!("{e:?}"))
}

fn get_err(path_and_query: &str) -> ApiError {
    match try_req(Method::GET, path_and_query, &[], "") {
        Ok(r) => panic!("{path_and_query}: expected an error, got {r:?}"),
        Err(e) => e,
    }
}

fn filter(path_and_query: &str) -> Filter {
    let r = get(path_and_query);
    assert_eq!(r.filters.len(), 1, "{r:?}");
    match r.filters.into_iter().next().unwrap() {
        Condition::Filter(f) => f,
        tree => panic!("expected a filter, got {tree:?}"),
    }
}

fn cmp(column: &str, op: CmpOp, value: &str) -> Filter {
    Filter {
        column: column.into(),
        json: vec![],
        negate: false,
        op: Op::Cmp(op, value.into()),
    }
}

// ---- filters ---------------------------------------------------------------------------

#[test]
fn every_comparison_filter_parses() {
    let cases = [
        ("eq", CmpOp::Eq),
        ("neq", CmpOp::Neq),
        ("lt", CmpOp::Lt),
        ("lte", CmpOp::Lte),
        ("gt", CmpOp::Gt),
        ("gte", CmpOp::Gte),
        ("like", CmpOp::Like),
        ("ilike", CmpOp::Ilike),
    ];
    for (name, op) in cases {
        assert_eq!(
            filter(&format!("messages?body={name}.hello")),
            cmp("body", op, "hello"),
            "{name}"
        );
    }
}

#[test]
fn a_value_keeps_its_dots_and_everything_after_the_operator() {
    assert_eq!(
        filter("messages?created_at=gt.2024-01-01T10:00:00.123%2B00:00"),
        cmp("created_at", CmpOp::Gt, "2024-01-01T10:00:00.123+00:00")
    );
    assert_eq!(filter("messages?body=eq."), cmp("body", CmpOp::Eq, ""));
}

#[test]
fn like_stars_become_percent_signs() {
    assert_eq!(
        filter("messages?body=like.*hello*"),
        cmp("body", CmpOp::Like, "%hello%")
    );
    assert_eq!(
        filter("messages?body=ilike.He*"),
        cmp("body", CmpOp::Ilike, "He%")
    );
}

#[test]
fn not_negates_any_filter() {
    let f = filter("messages?body=not.eq.x");
    assert!(f.negate);
    assert_eq!(f.op, Op::Cmp(CmpOp::Eq, "x".into()));
    let f = filter("messages?deleted_at=not.is.null");
    assert!(f.negate);
    assert_eq!(f.op, Op::Is(IsValue::Null));
    let f = filter("messages?kind=not.in.(text,image)");
    assert!(f.negate);
    assert_eq!(f.op, Op::In(vec!["text".into(), "image".into()]));
}

#[test]
fn in_lists_take_quotes_commas_escapes_and_nothing() {
    assert_eq!(
        filter("t?a=in.(1,2,3)").op,
        Op::In(vec!["1".into(), "2".into(), "3".into()])
    );
    assert_eq!(
        filter(r#"t?a=in.("a,b",c,"d\"e","f\\g")"#).op,
        Op::In(vec!["a,b".into(), "c".into(), "d\"e".into(), "f\\g".into()])
    );
    assert_eq!(filter("t?a=in.()").op, Op::In(vec![]));
    assert_eq!(filter("t?a=in.(x)").op, Op::In(vec!["x".into()]));
    for bad in [
        "t?a=in.1,2",
        "t?a=in.(1,2",
        r#"t?a=in.("x)"#,
        r#"t?a=in.("x"y)"#,
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn is_takes_only_its_keywords() {
    for (v, want) in [
        ("null", IsValue::Null),
        ("NULL", IsValue::Null),
        ("not_null", IsValue::NotNull),
        ("true", IsValue::True),
        ("false", IsValue::False),
        ("unknown", IsValue::Unknown),
    ] {
        assert_eq!(filter(&format!("t?a=is.{v}")).op, Op::Is(want));
    }
    for bad in ["t?a=is.1", "t?a=is.null;select", "t?a=is."] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn unknown_operators_and_values_without_one_are_refused() {
    for bad in [
        "t?a=contains.{1}",
        "t?a=eq(english).x",
        "t?a=eq",
        "t?a=hello",
        "t?a=like(any).{a,b}",
        "t?a=EQ.1",
    ] {
        let e = get_err(bad);
        assert_eq!(e.code, "PGRST100", "{bad}");
        assert_eq!(e.status.as_u16(), 400);
    }
}

#[test]
fn logic_trees_nest_negate_and_quote() {
    let r = get("t?or=(a.eq.1,and(b.gt.2,c.not.lt.3),not.or(d.is.null,e.in.(1,2)))&not.and=(f.eq.%22x,y%22)");
    let f = |column: &str, negate: bool, op: Op| {
        Condition::Filter(Filter {
            column: column.into(),
            json: vec![],
            negate,
            op,
        })
    };
    assert_eq!(
        r.filters,
        vec![
            Condition::Tree {
                or: true,
                negate: false,
                children: vec![
                    f("a", false, Op::Cmp(CmpOp::Eq, "1".into())),
                    Condition::Tree {
                        or: false,
                        negate: false,
                        children: vec![
                            f("b", false, Op::Cmp(CmpOp::Gt, "2".into())),
                            f("c", true, Op::Cmp(CmpOp::Lt, "3".into())),
                        ],
                    },
                    Condition::Tree {
                        or: true,
                        negate: true,
                        children: vec![
                            f("d", false, Op::Is(IsValue::Null)),
                            f("e", false, Op::In(vec!["1".into(), "2".into()])),
                        ],
                    },
                ],
            },
            Condition::Tree {
                or: false,
                negate: true,
                children: vec![f("f", false, Op::Cmp(CmpOp::Eq, "x,y".into()))],
            },
        ]
    );
}

#[test]
fn bad_logic_trees_are_refused() {
    for bad in [
        "t?or=a.eq.1",
        "t?or=(a.eq.1",
        "t?or=(a.eq.1))",
        "t?or=()",
        "t?or=(a)",
        "t?or=(a.nope.1)",
        "t?or=(a;drop.eq.1)",
        "t?or=(and(a.eq.1)",
        "t?or=(a.eq.1,b.eq.%22unterminated)",
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
    let deep = format!("t?or=({}a.eq.1{})", "and(".repeat(20), ")".repeat(20));
    assert_eq!(get_err(&deep).code, "PGRST100");
}

#[test]
fn the_new_operators_parse() {
    let op = |q: &str| filter(q).op;
    assert_eq!(op("t?a=cs.{1,2}"), Op::Cmp(CmpOp::Contains, "{1,2}".into()));
    assert_eq!(op("t?a=cd.{1}"), Op::Cmp(CmpOp::ContainedIn, "{1}".into()));
    assert_eq!(op("t?a=ov.[1,5)"), Op::Cmp(CmpOp::Overlaps, "[1,5)".into()));
    assert_eq!(op("t?a=match.^x"), Op::Cmp(CmpOp::Match, "^x".into()));
    assert_eq!(op("t?a=imatch.^x"), Op::Cmp(CmpOp::Imatch, "^x".into()));
    assert_eq!(
        op("t?a=isdistinct.3"),
        Op::Cmp(CmpOp::IsDistinct, "3".into())
    );
    assert_eq!(
        op("t?a=fts(english).cat%20%26%20dog"),
        Op::Fts {
            kind: super::parse::Fts::Query,
            language: Some("english".into()),
            query: "cat & dog".into()
        }
    );
    for (name, kind) in [
        ("plfts", super::parse::Fts::Plain),
        ("phfts", super::parse::Fts::Phrase),
        ("wfts", super::parse::Fts::Websearch),
    ] {
        assert_eq!(
            op(&format!("t?a={name}.x")),
            Op::Fts {
                kind,
                language: None,
                query: "x".into()
            }
        );
    }
    for bad in [
        "t?a=fts(eng;lish).x",
        "t?a=fts(english.x",
        "t?a=cs(english).x",
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn json_paths_and_embedded_filters_are_addressed_by_key() {
    let f = filter("t?data->a->>0=eq.x");
    assert_eq!(f.column, "data");
    assert_eq!(
        f.json,
        vec![
            super::parse::JsonStep {
                as_text: false,
                key: "a".into()
            },
            super::parse::JsonStep {
                as_text: true,
                key: "0".into()
            }
        ]
    );
    let r = get("t?select=*,sender:profiles(*)&sender.display_name=eq.x&sender.or=(a.eq.1)&reactions.order=emoji.desc&reactions.limit=2&reactions.offset=1");
    assert!(r.filters.is_empty());
    assert_eq!(r.embeds.len(), 2);
    assert_eq!(r.embeds[0].path, vec!["sender"]);
    assert_eq!(r.embeds[0].filters.len(), 2);
    assert_eq!(r.embeds[1].path, vec!["reactions"]);
    assert_eq!((r.embeds[1].limit, r.embeds[1].offset), (Some(2), 1));
    assert!(r.embeds[1].order[0].descending);
}

#[test]
fn select_takes_embeds_with_aliases_hints_inner_and_nesting() {
    let r = get("messages?select=id,sender:profiles!messages_sender_id_fkey!inner(display_name,avatar_url),message_reactions(emoji,profiles(*))");
    let SelectItem::Embed(sender) = &r.select[1] else {
        panic!("{r:?}")
    };
    assert_eq!(sender.name, "profiles");
    assert_eq!(sender.key(), "sender");
    assert_eq!(sender.hint.as_deref(), Some("messages_sender_id_fkey"));
    assert!(sender.inner);
    assert_eq!(sender.select.len(), 2);
    let SelectItem::Embed(reactions) = &r.select[2] else {
        panic!("{r:?}")
    };
    assert!(!reactions.inner);
    assert!(matches!(&reactions.select[1], SelectItem::Embed(p) if p.name == "profiles"));
}

#[test]
fn select_takes_json_paths_and_casts() {
    let r = get("t?select=n:data->a->>b,id::text,data->>c::int");
    assert_eq!(
        r.select,
        vec![
            SelectItem::Column {
                name: "data".into(),
                alias: Some("n".into()),
                json: vec![
                    super::parse::JsonStep {
                        as_text: false,
                        key: "a".into()
                    },
                    super::parse::JsonStep {
                        as_text: true,
                        key: "b".into()
                    }
                ],
                cast: None,
            },
            SelectItem::Column {
                name: "id".into(),
                alias: None,
                json: vec![],
                cast: Some("text".into()),
            },
            SelectItem::Column {
                name: "data".into(),
                alias: None,
                json: vec![super::parse::JsonStep {
                    as_text: true,
                    key: "c".into()
                }],
                cast: Some("int".into()),
            },
        ]
    );
    for bad in [
        "t?select=id::text;drop",
        "t?select=id::%22text%22",
        "t?select=id::text(1)",
        "t?select=id::",
        "t?select=data->'x'",
        "t?select=data->x;y",
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn several_filters_on_one_column_all_apply() {
    let r = get("messages?created_at=gte.2024-01-01&created_at=lt.2024-02-01&body=neq.x");
    assert_eq!(r.filters.len(), 3);
}

// ---- select, order, limit, range ------------------------------------------------------

#[test]
fn select_takes_columns_aliases_quotes_and_star() {
    let r = get("messages?select=id,text:body,*,%22created_at%22");
    assert_eq!(
        r.select,
        vec![
            SelectItem::Column {
                name: "id".into(),
                alias: None,
                json: vec![],
                cast: None,
            },
            SelectItem::Column {
                name: "body".into(),
                alias: Some("text".into()),
                json: vec![],
                cast: None,
            },
            SelectItem::Star,
            SelectItem::Column {
                name: "created_at".into(),
                alias: None,
                json: vec![],
                cast: None,
            },
        ]
    );
    // supabase-js strips whitespace, curl users may not.
    assert_eq!(get("t?select= id , body ").select.len(), 2);
}

#[test]
fn select_refuses_expressions_and_broken_embeds() {
    for bad in [
        "t?select=(select 1)",
        "t?select=x(a",
        "t?select=x(a))",
        "t?select=x(a)b",
        "t?select=id;drop table messages",
        "t?select=id from messages--",
        "t?select=a:b:c",
    ] {
        let e = get_err(bad);
        assert_eq!(e.code, "PGRST100", "{bad}");
    }
}

#[test]
fn order_takes_direction_and_nulls() {
    let r = get("t?order=created_at.desc.nullslast,id,name.asc.nullsfirst");
    assert_eq!(
        r.order,
        vec![
            OrderTerm {
                column: "created_at".into(),
                descending: true,
                nulls_first: Some(false)
            },
            OrderTerm {
                column: "id".into(),
                descending: false,
                nulls_first: None
            },
            OrderTerm {
                column: "name".into(),
                descending: false,
                nulls_first: Some(true)
            },
        ]
    );
}

#[test]
fn order_refuses_anything_but_its_keywords() {
    for bad in [
        "t?order=id.desc;drop table x",
        "t?order=id desc",
        "t?order=id.random()",
        "t?order=id.desc.nulls",
        "t?order=(select 1)",
        "t?order=1;select",
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn limit_and_offset_are_plain_non_negative_integers() {
    let r = get("t?limit=10&offset=20");
    assert_eq!((r.offset, r.limit), (20, Some(10)));
    for bad in [
        "t?limit=-1",
        "t?limit=1.5",
        "t?limit=ten",
        "t?offset=1;drop",
        "t?limit=",
        "t?limit=99999999999999999999999",
    ] {
        assert_eq!(get_err(bad).code, "PGRST100", "{bad}");
    }
}

#[test]
fn a_range_header_pages_and_meets_limit_and_offset() {
    let range = |h: &str, q: &str| {
        let r = try_req(Method::GET, &format!("t{q}"), &[("range", h)], "").unwrap();
        (r.offset, r.limit)
    };
    assert_eq!(range("0-9", ""), (0, Some(10)));
    assert_eq!(range("items=5-9", ""), (5, Some(5)));
    assert_eq!(range("10-", ""), (10, None));
    // Both: the rows both allow.
    assert_eq!(range("0-9", "?limit=5"), (0, Some(5)));
    assert_eq!(range("5-20", "?offset=10&limit=100"), (10, Some(11)));
    assert_eq!(range("0-4", "?offset=10"), (10, Some(0)));
    for bad in ["9-0", "a-b", "5", "-5", "0-1;drop"] {
        let e = try_req(Method::GET, "t", &[("range", bad)], "").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (416, "PGRST103"),
            "{bad}"
        );
    }
    // Writes ignore Range (PostgREST does too).
    let r = try_req(Method::DELETE, "t?id=eq.1", &[("range", "0-1")], "").unwrap();
    assert_eq!(r.limit, None);
}

#[test]
fn limits_on_patch_and_delete_are_refused() {
    let e = try_req(Method::DELETE, "t?id=eq.1&limit=1", &[], "").unwrap_err();
    assert_eq!(e.code, "PGRST100");
}

// ---- identifiers and paths ------------------------------------------------------------

#[test]
fn bad_identifiers_are_refused_in_every_position() {
    let long = "a".repeat(64);
    let bad_names = [
        "a;b",
        "a b",
        "a'b",
        "a\"b",
        "\"a\"b\"",
        "\"\"",
        "\"a\\\"",
        "a--",
        "a/*",
        "a)",
        long.as_str(),
    ];
    for name in bad_names {
        let enc: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        for q in [
            format!("t?{enc}=eq.1"),
            format!("t?select={enc}"),
            format!("t?order={enc}.desc"),
        ] {
            let e = get_err(&q);
            assert_eq!(e.code, "PGRST100", "{q}");
        }
        let e = get_err(&format!(
            "{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        ));
        assert!(
            matches!(e.code.as_str(), "PGRST100" | "PGRST125"),
            "{name}: {e:?}"
        );
        let e = get_err(&format!(
            "rpc/{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        ));
        assert!(
            matches!(e.code.as_str(), "PGRST100" | "PGRST125"),
            "{name}: {e:?}"
        );
    }
    // 63 bytes is the longest name PostgreSQL keeps.
    let ok = "a".repeat(63);
    assert_eq!(get(&format!("t?select={ok}")).select.len(), 1);
}

#[test]
fn unicode_and_quoted_identifiers_are_accepted_as_candidates() {
    assert_eq!(
        get("t?select=n%C3%A4me").select,
        vec![SelectItem::Column {
            name: "näme".into(),
            alias: None,
            json: vec![],
            cast: None,
        }]
    );
    assert_eq!(
        get("t?select=%22with%20space%22").select,
        vec![SelectItem::Column {
            name: "with space".into(),
            alias: None,
            json: vec![],
            cast: None,
        }]
    );
}

#[test]
fn function_names_cannot_carry_sql() {
    for bad in [
        "rpc/pg_sleep(10)",
        "rpc/send_message;drop%20table%20messages",
        "rpc/public.send_message",
        "rpc/a%22b",
        "rpc/",
        "rpc/a/b",
    ] {
        let e = try_req(Method::POST, bad, &[], "{}").unwrap_err();
        assert!(
            matches!(e.code.as_str(), "PGRST100" | "PGRST125"),
            "{bad}: {e:?}"
        );
    }
    let r = try_req(Method::POST, "rpc/send_message", &[], "{}").unwrap();
    assert_eq!(r.target, Target::Rpc("send_message".into()));
}

#[test]
fn paths_are_one_table_or_one_function() {
    for bad in ["", "messages/1", "public/messages", "messages/"] {
        let e = try_req(Method::GET, bad, &[], "").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (404, "PGRST125"),
            "{bad}"
        );
    }
}

// ---- schema headers -------------------------------------------------------------------

#[test]
fn profiles_pick_only_among_exposed_schemas() {
    let r = try_req(Method::GET, "t", &[("accept-profile", "api")], "").unwrap();
    assert_eq!(r.schema, "api");
    let r = try_req(Method::POST, "t", &[("content-profile", "api")], "{}").unwrap();
    assert_eq!(r.schema, "api");
    assert_eq!(get("t").schema, "public");
    for bad in [
        "auth",
        "private",
        "realtime",
        "pg_catalog",
        "public;drop",
        "\"public\"",
        "PUBLIC",
        "",
    ] {
        let e = try_req(Method::GET, "t", &[("accept-profile", bad)], "").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (406, "PGRST106"),
            "{bad}"
        );
        let e = try_req(Method::POST, "t", &[("content-profile", bad)], "{}").unwrap_err();
        assert_eq!(e.code, "PGRST106", "{bad}");
    }
}

#[test]
fn internal_schemas_cannot_even_be_configured() {
    let configured: Vec<String> = ["auth", "public"].iter().map(|s| s.to_string()).collect();
    assert_eq!(super::catalog::exposed_schemas(&configured), vec!["public"]);
}

// ---- headers: Prefer, Accept ----------------------------------------------------------

#[test]
fn prefer_is_read_across_headers_and_lists() {
    let r = try_req(
        Method::POST,
        "t",
        &[
            ("prefer", "return=representation, count=exact"),
            ("prefer", "tx=rollback"),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(r.prefer.return_, Some(Return::Representation));
    assert!(r.prefer.count);
    let r = try_req(Method::POST, "t", &[("prefer", "return=minimal")], "{}").unwrap();
    assert_eq!(r.prefer.return_, Some(Return::Minimal));
    assert!(!r.prefer.count);
}

#[test]
fn the_first_of_a_repeated_preference_wins_and_applied_lists_them_in_postgrest_order() {
    let r = try_req(
        Method::POST,
        "t",
        &[
            ("prefer", "tx=rollback, return=representation"),
            (
                "prefer",
                "tx=commit, missing=default, count=exact, handling=strict",
            ),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(r.prefer.rollback, Some(true));
    assert_eq!(r.prefer.missing_default, Some(true));
    assert_eq!(
        r.prefer.applied().as_deref(),
        Some("missing=default, return=representation, count=exact, tx=rollback, handling=strict")
    );
    let r = try_req(Method::GET, "t", &[], "").unwrap();
    assert_eq!(r.prefer.applied(), None);
}

#[test]
fn unknown_preferences_are_ignored_unless_handling_is_strict() {
    let r = try_req(Method::GET, "t", &[("prefer", "foo, tx=maybe")], "").unwrap();
    assert_eq!(r.prefer.rollback, None);
    let r = try_req(Method::GET, "t", &[("prefer", "handling=lenient, foo")], "").unwrap();
    assert_eq!(r.prefer.strict, Some(false));
    let e = try_req(
        Method::GET,
        "t",
        &[("prefer", "handling=strict, foo, tx=maybe")],
        "",
    )
    .unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    assert_eq!(e.code, "PGRST122");
    assert_eq!(
        e.details.as_deref(),
        Some("Invalid preferences: foo, tx=maybe")
    );
    // Known preferences alone pass strict handling.
    try_req(
        Method::GET,
        "t",
        &[("prefer", "handling=strict, count=exact, tx=rollback")],
        "",
    )
    .unwrap();
}

#[test]
fn accept_picks_array_or_single_object_and_refuses_others() {
    let accept = |h: &str| try_req(Method::GET, "t", &[("accept", h)], "").map(|r| r.accept);
    assert_eq!(
        accept("application/json").unwrap(),
        Accept::Json { strip_nulls: false }
    );
    assert_eq!(accept("*/*").unwrap(), Accept::Json { strip_nulls: false });
    assert_eq!(
        accept("application/vnd.pgrst.object+json").unwrap(),
        Accept::Object { strip_nulls: false }
    );
    assert_eq!(
        accept("application/vnd.pgrst.array+json;nulls=stripped").unwrap(),
        Accept::Json { strip_nulls: true }
    );
    assert_eq!(
        accept("text/csv, application/json").unwrap(),
        Accept::Json { strip_nulls: false }
    );
    for bad in [
        "text/csv",
        "application/geo+json",
        "application/vnd.pgrst.plan+text",
    ] {
        let e = accept(bad).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (406, "PGRST107"),
            "{bad}"
        );
    }
}

// ---- methods --------------------------------------------------------------------------

#[test]
fn methods_map_to_verbs_and_others_are_refused() {
    assert_eq!(
        try_req(Method::HEAD, "t", &[], "").unwrap().verb,
        Verb::Head
    );
    assert_eq!(
        try_req(Method::PATCH, "t?id=eq.1", &[], "{\"a\":1}")
            .unwrap()
            .verb,
        Verb::Patch
    );
    assert_eq!(
        try_req(Method::PUT, "t", &[], "{}").unwrap().verb,
        Verb::Put
    );
    let e = try_req(Method::PUT, "rpc/f", &[], "{}").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (405, "PGRST101"));
    let e = try_req(Method::CONNECT, "t", &[], "").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (405, "PGRST117"));
    let e = try_req(Method::DELETE, "rpc/f", &[], "").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (405, "PGRST101"));
}

// ---- bodies ---------------------------------------------------------------------------

#[test]
fn a_wrong_content_type_is_415() {
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/csv",
        "application/jsonp",
        "multipart/form-data; boundary=x",
    ] {
        let e = try_req(Method::POST, "t", &[("content-type", ct)], "{}").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (415, "PGRST107"),
            "{ct}"
        );
        let e = try_req(Method::POST, "rpc/f", &[("content-type", ct)], "{}").unwrap_err();
        assert_eq!(e.status.as_u16(), 415, "{ct}");
    }
    let ok = try_req(
        Method::POST,
        "t",
        &[("content-type", "application/json; charset=utf-8")],
        "{}",
    );
    assert!(ok.is_ok());
}

#[test]
fn bad_json_is_400_with_where_it_broke() {
    for body in ["{", "{\"a\":}", "nope", "{\"a\":1}}", "[1,", "\u{0}"] {
        let e = try_req(Method::POST, "t", &[], body).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "PGRST102"),
            "{body:?}"
        );
        assert!(e.details.is_some(), "{body:?}");
    }
    let e = try_req(Method::POST, "t", &[], "").unwrap_err();
    assert_eq!(e.code, "PGRST102");
}

#[test]
fn bodies_must_have_the_shape_their_verb_needs() {
    for (method, path, body) in [
        (Method::POST, "t", "1"),
        (Method::POST, "t", "\"x\""),
        (Method::POST, "t", "[1,2]"),
        (Method::POST, "t", "[{\"a\":1},{\"b\":2}]"),
        (Method::PATCH, "t", "[{\"a\":1}]"),
        (Method::POST, "rpc/f", "[{\"a\":1}]"),
        (Method::POST, "rpc/f", "5"),
        (Method::POST, "t", "{\"a\\\"b\":1}"),
        (Method::POST, "t", "{\"\":1}"),
    ] {
        let e = try_req(method.clone(), path, &[], body).unwrap_err();
        assert_eq!(e.code, "PGRST102", "{method} {path} {body}");
    }
}

#[test]
fn bulk_inserts_take_shared_keys_or_columns() {
    let r = try_req(Method::POST, "t", &[], r#"[{"a":1,"b":2},{"b":3,"a":4}]"#).unwrap();
    assert_eq!(r.payload.unwrap().keys, vec!["a", "b"]);
    // supabase-js names the columns when rows differ; missing keys become null.
    let r = try_req(
        Method::POST,
        "t?columns=%22a%22,%22b%22",
        &[],
        r#"[{"a":1},{"b":3}]"#,
    )
    .unwrap();
    assert_eq!(r.payload.unwrap().keys, vec!["a", "b"]);
    let e = try_req(Method::POST, "t?columns=a;b", &[], r#"[{"a":1}]"#).unwrap_err();
    assert_eq!(e.code, "PGRST100");
}

#[test]
fn an_rpc_without_a_body_has_no_arguments() {
    let r = try_req(Method::POST, "rpc/unread_counts", &[], "").unwrap();
    assert_eq!(r.payload.unwrap().keys, Vec::<String>::new());
}

#[test]
fn a_get_rpc_keeps_its_parameters_for_the_signature_to_sort() {
    let r = get("rpc/list_conversations?lim=5&archived=true&id=eq.x&select=id");
    assert_eq!(
        r.rpc_params,
        vec![
            ("lim".to_string(), "5".to_string()),
            ("archived".to_string(), "true".to_string()),
            ("id".to_string(), "eq.x".to_string())
        ]
    );
    assert!(r.filters.is_empty());
    assert_eq!(r.select.len(), 1);
}

#[test]
fn apikey_in_the_query_is_a_credential_not_a_filter() {
    assert!(get("t?apikey=abc").filters.is_empty());
}

#[test]
fn an_announced_oversized_body_is_refused_before_reading() {
    let mut h = HeaderMap::new();
    h.insert("content-length", HeaderValue::from_static("1025"));
    assert!(crate::http::announced_length_over(&h, 1024));
    h.insert("content-length", HeaderValue::from_static("1024"));
    assert!(!crate::http::announced_length_over(&h, 1024));
    h.insert("content-length", HeaderValue::from_static("abc"));
    assert!(
        !crate::http::announced_length_over(&h, 1024),
        "the limited read still applies"
    );
    let e = ApiError::body_too_large(1024);
    assert_eq!((e.status.as_u16(), e.code.as_str()), (413, "RPL413"));
}

// ---- statements -----------------------------------------------------------------------

fn col(name: &str, type_sql: &str, readable: bool) -> Column {
    Column {
        name: name.into(),
        type_sql: type_sql.into(),
        readable,
        default_sql: None,
    }
}

fn catalog() -> Catalog {
    let messages = Table {
        schema: "public".into(),
        name: "messages".into(),
        columns: vec![
            col("id", "uuid", true),
            col("body", "text", true),
            col("kind", "public.message_kind", true),
            col("created_at", "timestamp with time zone", true),
            col("secret", "text", false),
            col("sender_id", "uuid", true),
            col("reply_to_id", "uuid", true),
        ],
        primary_key: vec!["id".into()],
    };
    let send = Function {
        schema: "public".into(),
        name: "send_message".into(),
        args: vec![
            Arg {
                name: "conversation_id".into(),
                type_sql: "uuid".into(),
                has_default: false,
            },
            Arg {
                name: "body".into(),
                type_sql: "text".into(),
                has_default: false,
            },
            Arg {
                name: "client_id".into(),
                type_sql: "text".into(),
                has_default: true,
            },
        ],
        volatility: Volatility::Volatile,
        returns_set: false,
        returns: Returns::Rows(vec![col("id", "uuid", true), col("body", "text", true)]),
    };
    let list = Function {
        schema: "public".into(),
        name: "list_things".into(),
        args: vec![Arg {
            name: "lim".into(),
            type_sql: "integer".into(),
            has_default: true,
        }],
        volatility: Volatility::Stable,
        returns_set: true,
        returns: Returns::Rows(vec![col("id", "uuid", true), col("n", "bigint", true)]),
    };
    let counts = Function {
        schema: "public".into(),
        name: "unread_counts".into(),
        args: vec![],
        volatility: Volatility::Stable,
        returns_set: false,
        returns: Returns::Scalar {
            type_sql: "jsonb".into(),
        },
    };
    let touch = Function {
        schema: "public".into(),
        name: "touch".into(),
        args: vec![],
        volatility: Volatility::Volatile,
        returns_set: false,
        returns: Returns::Void,
    };
    let profiles = Table {
        schema: "public".into(),
        name: "profiles".into(),
        columns: vec![col("id", "uuid", true), col("display_name", "text", true)],
        primary_key: vec!["id".into()],
    };
    let reactions = Table {
        schema: "public".into(),
        name: "message_reactions".into(),
        columns: vec![
            col("message_id", "uuid", true),
            col("user_id", "uuid", true),
            col("emoji", "text", true),
        ],
        primary_key: vec![],
    };
    let fk = |name: &str, table: &str, cols: &[&str], ref_table: &str, ref_cols: &[&str]| {
        super::catalog::ForeignKey {
            name: name.into(),
            schema: "public".into(),
            table: table.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            ref_schema: "public".into(),
            ref_table: ref_table.into(),
            ref_columns: ref_cols.iter().map(|c| c.to_string()).collect(),
        }
    };
    Catalog::from_parts(
        vec![messages, profiles, reactions],
        vec![send, list, counts, touch],
    )
    .with_foreign_keys(vec![
        fk(
            "messages_sender_fkey",
            "messages",
            &["sender_id"],
            "profiles",
            &["id"],
        ),
        fk(
            "messages_reply_fkey",
            "messages",
            &["reply_to_id"],
            "messages",
            &["id"],
        ),
        fk(
            "reactions_message_fkey",
            "message_reactions",
            &["message_id"],
            "messages",
            &["id"],
        ),
        fk(
            "reactions_user_fkey",
            "message_reactions",
            &["user_id"],
            "profiles",
            &["id"],
        ),
    ])
}

#[test]
fn embedding_reads_related_tables_in_lateral_subqueries_of_one_statement() {
    let s = statement(
        Method::GET,
        "messages?select=id,sender:profiles(display_name),message_reactions!inner(emoji,profiles(*))&sender.display_name=eq.x&message_reactions.order=emoji.desc&message_reactions.limit=3",
        &[],
        "",
    );
    assert!(s.sql.contains(
        "left join lateral (select row_to_json(_ripple_t1) as body from (select _ripple_1.\"display_name\" as \"display_name\" from \"public\".\"profiles\" _ripple_1 where _ripple_1.\"id\" = _ripple_src.\"sender_id\" and _ripple_1.\"display_name\" = $1::text) _ripple_t1) _ripple_j1 on true"
    ), "{}", s.sql);
    assert!(s.sql.contains("_ripple_j1.body as \"sender\""), "{}", s.sql);
    // To-many: an array, ordered and paged inside; !inner drops parents without rows.
    assert!(
        s.sql.contains(
            "select json_agg(_ripple_t2) as body from (select _ripple_2.\"emoji\" as \"emoji\""
        ),
        "{}",
        s.sql
    );
    assert!(s.sql.contains("where _ripple_2.\"message_id\" = _ripple_src.\"id\" order by _ripple_2.\"emoji\" desc limit $2::bigint offset $3::bigint"), "{}", s.sql);
    assert!(
        s.sql
            .contains("coalesce(_ripple_j2.body, '[]') as \"message_reactions\""),
        "{}",
        s.sql
    );
    assert!(
        s.sql.contains("where _ripple_j2.body is not null"),
        "{}",
        s.sql
    );
    // Nested: the reaction's user, to-one, inside the reactions' subquery.
    assert!(
        s.sql.contains("_ripple_3.\"id\" = _ripple_2.\"user_id\""),
        "{}",
        s.sql
    );
    assert_eq!(
        s.params,
        vec![
            Param::Text(Some("x".into())),
            Param::Text(Some("3".into())),
            Param::Text(Some("0".into())),
            Param::Text(None),
            Param::Text(Some("0".into())),
        ]
    );
}

#[test]
fn embedding_needs_a_foreign_key_and_a_hint_when_there_are_several() {
    let e = statement_err(Method::GET, "messages?select=*,nope(*)", "");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "PGRST200"));
    let e = statement_err(Method::GET, "profiles?select=*,pg_sleep(*)", "");
    assert_eq!(e.code, "PGRST200");
    // messages -> messages: the parent's reply_to_id, or replies to it.
    let e = statement_err(Method::GET, "messages?select=*,messages(*)", "");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (300, "PGRST201"));
    assert!(e.hint.unwrap().contains("'messages!messages_reply_fkey'"));
    let s = statement(
        Method::GET,
        "messages?select=*,reply:messages!reply_to_id(id)",
        &[],
        "",
    );
    assert!(
        s.sql
            .contains("_ripple_1.\"id\" = _ripple_src.\"reply_to_id\""),
        "{}",
        s.sql
    );
    // Embedding by the foreign key column's name, as PostgREST allows.
    let s = statement(
        Method::GET,
        "messages?select=sender_id(display_name)",
        &[],
        "",
    );
    assert!(s.sql.contains("row_to_json"), "{}", s.sql);
    // A hint that names no foreign key between them.
    let e = statement_err(Method::GET, "messages?select=*,profiles!nope(*)", "");
    assert_eq!(e.code, "PGRST200");
    // Parameters for an embedded resource the select does not name.
    let e = statement_err(Method::GET, "messages?select=*&sender.id=eq.1", "");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "PGRST108"));
    // Unknown columns of an embedded table, in select and filters.
    let e = statement_err(Method::GET, "messages?select=*,profiles(nope)", "");
    assert_eq!(e.code, "42703");
    let e = statement_err(
        Method::GET,
        "messages?select=*,profiles(*)&profiles.nope=eq.1",
        "",
    );
    assert_eq!(e.code, "42703");
}

#[test]
fn logic_trees_operators_and_json_paths_bind_every_value() {
    let s = statement(
        Method::GET,
        "messages?or=(body.fts(english).cat,and(kind.cs.{a},created_at.isdistinct.2024-01-01))&body->>k=match.%5Ex&select=id::text,body->0",
        &[],
        "",
    );
    assert!(
        s.sql.contains("(_ripple_src.\"id\")::text as \"id\""),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("(_ripple_src.\"body\" -> $1::int)::jsonb as \"0\""),
        "{}",
        s.sql
    );
    assert!(s.sql.contains(
        "where (to_tsvector($2::regconfig, _ripple_src.\"body\"::text) @@ to_tsquery($2::regconfig, $3) or (_ripple_src.\"kind\" @> $4::public.message_kind and _ripple_src.\"created_at\" is distinct from $5::timestamp with time zone)) and (_ripple_src.\"body\" ->> $6)::text ~ $7"
    ), "{}", s.sql);
    for hostile in HOSTILE {
        let enc: String = url::form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
        for q in [
            format!("messages?or=(body.eq.{enc},body.fts.{enc})"),
            format!("messages?body->>{}=eq.1", "k"),
            format!("messages?select=*,profiles(*)&profiles.display_name=wfts.{enc}"),
        ] {
            // Either refused as malformed (unbalanced parentheses in a tree) or bound.
            let req = match try_req(Method::GET, &q, &[], "") {
                Ok(r) => r,
                Err(e) => {
                    assert_eq!(e.code, "PGRST100", "{q}");
                    continue;
                }
            };
            let s = plan(&catalog(), &req).unwrap_or_else(|e| panic!("{q}: {e:?}"));
            assert!(!s.sql.contains(hostile), "{q}: {}", s.sql);
        }
    }
}

fn statement(method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Statement {
    let req = try_req(method, path, headers, body).unwrap_or_else(|e| panic!("{e:?}"));
    plan(&catalog(), &req).unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

fn statement_err(method: Method, path: &str, body: &str) -> ApiError {
    let req = try_req(method, path, &[], body).unwrap_or_else(|e| panic!("{e:?}"));
    match plan(&catalog(), &req) {
        Ok(s) => panic!("{path}: expected an error, got {}", s.sql),
        Err(e) => e,
    }
}

const HOSTILE: &[&str] = &[
    "'; drop table messages; --",
    "1) or (1=1",
    "$1 or true",
    "\" or \"\"=\"",
    "x'::text); select pg_sleep(10); --",
    "\\'",
    "$$; drop table x; $$",
];

#[test]
fn hostile_values_are_only_ever_parameters() {
    for v in HOSTILE {
        let enc: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        for op in ["eq", "neq", "lt", "like", "ilike"] {
            let s = statement(Method::GET, &format!("messages?body={op}.{enc}"), &[], "");
            assert!(!s.sql.contains(v), "{op}: {}", s.sql);
            assert!(
                s.params.contains(&Param::Text(Some(v.replace('*', "%")))),
                "{op}: {:?}",
                s.params
            );
        }
        let list = format!("(a,\"{}\")", v.replace('\\', "\\\\").replace('"', "\\\""));
        let list: String = url::form_urlencoded::byte_serialize(list.as_bytes()).collect();
        let s = statement(Method::GET, &format!("messages?body=in.{list}"), &[], "");
        assert!(!s.sql.contains(v));
        assert!(s
            .params
            .contains(&Param::TextArray(vec!["a".into(), v.to_string()])));
        // In bodies too: the body is one json parameter.
        let body = serde_json::json!({ "body": v }).to_string();
        for (m, p) in [
            (Method::POST, "messages"),
            (Method::PATCH, "messages?id=eq.1"),
        ] {
            let s = statement(m, p, &[], &body);
            assert!(!s.sql.contains(v), "{}", s.sql);
        }
        let body = serde_json::json!({ "conversation_id": v, "body": v }).to_string();
        let s = statement(Method::POST, "rpc/send_message", &[], &body);
        assert!(!s.sql.contains(v), "{}", s.sql);
        assert_eq!(s.params[0], Param::Text(Some(body.clone())));
    }
}

#[test]
fn unknown_columns_are_refused_before_sql_in_every_position() {
    for path in [
        "messages?select=nope",
        "messages?nope=eq.1",
        "messages?order=nope.desc",
        "messages?select=body,alias:nope",
    ] {
        let e = statement_err(Method::GET, path, "");
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "42703"),
            "{path}"
        );
    }
    let e = statement_err(Method::POST, "messages", r#"{"nope":1}"#);
    assert_eq!(e.code, "PGRST204");
    let e = statement_err(Method::PATCH, "messages?id=eq.1", r#"{"nope":1}"#);
    assert_eq!(e.code, "PGRST204");
    let req = try_req(
        Method::POST,
        "messages?on_conflict=nope",
        &[("prefer", "resolution=merge-duplicates")],
        r#"{"body":"x"}"#,
    )
    .unwrap();
    assert_eq!(plan(&catalog(), &req).unwrap_err().code, "42703");
}

#[test]
fn unknown_tables_and_functions_are_404() {
    let e = statement_err(Method::GET, "nope", "");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (404, "PGRST205"));
    let e = statement_err(Method::POST, "rpc/nope", "{}");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (404, "PGRST202"));
    // A real function with an argument it does not have.
    let e = statement_err(
        Method::POST,
        "rpc/send_message",
        r#"{"conversation_id":"x","body":"y","sneaky":"z"}"#,
    );
    assert_eq!(e.code, "PGRST202");
    assert!(e.hint.unwrap().contains("conversation_id => uuid"));
    // Missing a required one.
    let e = statement_err(Method::POST, "rpc/send_message", r#"{"body":"y"}"#);
    assert_eq!(e.code, "PGRST202");
}

#[test]
fn volatile_functions_refuse_get() {
    let e = statement_err(Method::GET, "rpc/touch", "");
    assert_eq!((e.status.as_u16(), e.code.as_str()), (405, "PGRST101"));
    let s = statement(Method::GET, "rpc/unread_counts", &[], "");
    assert_eq!(s.shape, Shape::Scalar);
}

#[test]
fn statements_quote_every_name_and_cast_every_value_to_its_column_type() {
    let s = statement(
        Method::GET,
        "messages?select=id,text:body&kind=in.(text,image)&created_at=gt.2024-01-01&order=created_at.desc.nullslast&limit=2",
        &[("prefer", "count=exact")],
        "",
    );
    assert_eq!(
        s.sql,
        "select coalesce(json_agg(_ripple_r), '[]')::text, count(*), \
         (select count(*) from \"public\".\"messages\" _ripple_src where _ripple_src.\"kind\" = any($1::text[]::public.message_kind[]) and _ripple_src.\"created_at\" > $2::timestamp with time zone) \
         from (select _ripple_src.\"id\" as \"id\", _ripple_src.\"body\" as \"text\" from \"public\".\"messages\" _ripple_src \
         where _ripple_src.\"kind\" = any($1::text[]::public.message_kind[]) and _ripple_src.\"created_at\" > $2::timestamp with time zone \
         order by _ripple_src.\"created_at\" desc nulls last limit $3::bigint offset $4::bigint) _ripple_r"
    );
    assert_eq!(
        s.params,
        vec![
            Param::TextArray(vec!["text".into(), "image".into()]),
            Param::Text(Some("2024-01-01".into())),
            Param::Text(Some("2".into())),
            Param::Text(Some("0".into())),
        ]
    );
    assert_eq!((s.kind, s.shape), (Kind::Rows, Shape::Array));
}

#[test]
fn star_means_the_columns_the_role_may_read() {
    let s = statement(Method::GET, "messages", &[], "");
    assert!(s.sql.contains("\"body\""));
    assert!(!s.sql.contains("secret"), "{}", s.sql);
    // Named explicitly, PostgreSQL decides (and refuses).
    let s = statement(Method::GET, "messages?select=secret", &[], "");
    assert!(s.sql.contains("\"secret\""));
}

#[test]
fn limit_values_share_one_statement() {
    let a = statement(Method::GET, "messages?limit=1", &[], "");
    let b = statement(Method::GET, "messages?limit=500&offset=7", &[], "");
    let c = statement(Method::GET, "messages", &[], "");
    assert_eq!(a.sql, b.sql);
    assert_eq!(a.sql, c.sql);
}

#[test]
fn writes_return_rows_only_when_asked() {
    let s = statement(Method::POST, "messages", &[], r#"{"body":"x"}"#);
    assert_eq!((s.kind, s.shape), (Kind::Execute, Shape::Empty));
    assert!(!s.sql.contains("returning"));
    let s = statement(
        Method::POST,
        "messages?select=id",
        &[("prefer", "return=representation")],
        r#"{"body":"x"}"#,
    );
    assert_eq!((s.kind, s.shape), (Kind::Rows, Shape::Array));
    assert!(
        s.sql.contains("returning _ripple_src.\"id\" as \"id\""),
        "{}",
        s.sql
    );
    let s = statement(
        Method::DELETE,
        "messages?id=eq.1",
        &[("prefer", "return=minimal")],
        "",
    );
    assert_eq!(s.kind, Kind::Execute);
}

#[test]
fn upserts_conflict_on_the_primary_key_or_named_columns() {
    let s = statement(
        Method::POST,
        "messages",
        &[("prefer", "resolution=merge-duplicates")],
        r#"{"id":"x","body":"y"}"#,
    );
    assert!(
        s.sql
            .ends_with("on conflict (\"id\") do update set \"body\" = excluded.\"body\""),
        "{}",
        s.sql
    );
    let s = statement(
        Method::POST,
        "messages?on_conflict=body",
        &[("prefer", "resolution=ignore-duplicates")],
        r#"{"id":"x","body":"y"}"#,
    );
    assert!(
        s.sql.ends_with("on conflict (\"body\") do nothing"),
        "{}",
        s.sql
    );
}

#[test]
fn rpc_arguments_are_typed_by_the_signature_and_bound_as_one_json() {
    let s = statement(
        Method::POST,
        "rpc/send_message",
        &[],
        r#"{"conversation_id":"c","body":"b"}"#,
    );
    assert!(
        s.sql.contains(
            "from json_to_record($1::json) as _ripple_x(\"conversation_id\" uuid, \"body\" text) \
             cross join lateral \"public\".\"send_message\"(\"conversation_id\" => _ripple_x.\"conversation_id\", \"body\" => _ripple_x.\"body\") _ripple_src"
        ),
        "{}",
        s.sql
    );
    assert_eq!(s.shape, Shape::Object);
    // GET: arguments by name, the rest filters the rows.
    let req = try_req(Method::GET, "rpc/list_things?lim=3&n=gt.1", &[], "").unwrap();
    let cat = catalog();
    let call = rpc::resolve(&cat, &req).unwrap();
    assert_eq!(call.arg_names, vec!["lim"]);
    assert_eq!(call.args_json, r#"{"lim":"3"}"#);
    assert_eq!(call.filters.len(), 1);
    let s = rpc::statement(&call, &req).unwrap();
    assert!(
        s.sql.contains("_ripple_src.\"n\" > $2::bigint"),
        "{}",
        s.sql
    );
    assert_eq!(s.shape, Shape::Array);
}

#[test]
fn scalar_and_void_functions_refuse_row_operations() {
    let e = statement_err(Method::GET, "rpc/unread_counts?select=x", "");
    assert_eq!(e.code, "PGRST100");
    let e = statement_err(Method::POST, "rpc/touch?order=x", "");
    assert_eq!(e.code, "PGRST100");
    let s = statement(Method::POST, "rpc/touch", &[], "");
    assert_eq!((s.kind, s.shape), (Kind::Execute, Shape::Empty));
    assert!(s.params.is_empty());
}

#[test]
fn quote_ident_doubles_quotes() {
    assert_eq!(sql::quote_ident("a\"b"), "\"a\"\"b\"");
}

#[test]
fn put_replaces_one_row_named_by_its_whole_primary_key() {
    let s = statement(
        Method::PUT,
        "messages?id=eq.7",
        &[],
        r#"{"id":"7","body":"x"}"#,
    );
    assert!(
        s.sql
            .ends_with(r#"on conflict ("id") do update set "body" = excluded."body""#),
        "{}",
        s.sql
    );
    let put_err = |path: &str, body: &str| {
        let req = try_req(Method::PUT, path, &[], body).unwrap_or_else(|e| panic!("{e:?}"));
        plan(&catalog(), &req).unwrap_err()
    };
    for path in [
        "messages",
        "messages?body=eq.7",
        "messages?id=gt.7",
        "messages?id=not.eq.7",
        "messages?id=eq.7&body=eq.x",
        "messages?id=eq.7&id=eq.8",
        "message_reactions?emoji=eq.x",
    ] {
        let e = put_err(path, r#"{"id":"7"}"#);
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (405, "PGRST105"),
            "{path}"
        );
    }
    for body in [r#"{"id":"8"}"#, r#"{"body":"x"}"#, r#"{"id":null}"#] {
        let e = put_err("messages?id=eq.7", body);
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "PGRST115"),
            "{body}"
        );
    }
    let e = try_req(Method::PUT, "messages?id=eq.7", &[], r#"[{"id":"7"}]"#).unwrap_err();
    assert_eq!(e.code, "PGRST102");
}

#[test]
fn missing_default_fills_left_out_keys_with_the_column_default_per_row() {
    let req = try_req(
        Method::POST,
        "messages?columns=id,body",
        &[("prefer", "missing=default")],
        r#"[{"id":"1"},{"id":"2","body":"x"}]"#,
    )
    .unwrap();
    let s = plan(&catalog(), &req).unwrap();
    assert!(
        s.sql
            .contains(r#"case when _ripple_e.o::jsonb ? $2 then _ripple_b."id" else null end"#),
        "{}",
        s.sql
    );
    assert!(s.sql.contains("json_array_elements($1::json)"), "{}", s.sql);
    assert_eq!(s.params[1], Param::Text(Some("id".into())));
}
