//! Request parsing: method, path, query string, headers and body in; an [`ApiRequest`] out.
//! Pure (no I/O, no catalog): it checks the *form* of every identifier and operator, and the
//! catalog check and quoting happen when SQL is built (`sql.rs`). Values stay values: they
//! are carried as strings and end up as bound parameters, never in SQL text.
//!
//! The syntax is PostgREST's, the subset supabase-js speaks:
//! `select=a,alias:b`, `col=[not.]op.value` with `eq neq lt lte gt gte like ilike in is`,
//! `order=a.desc.nullslast,b`, `limit`, `offset`, `columns` (insert), `on_conflict`,
//! the `Range`, `Prefer`, `Accept`, `Content-Type`, `Accept-Profile`/`Content-Profile`
//! headers.

use hyper::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RANGE};
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::error::ApiError;

/// PostgreSQL truncates identifiers to 63 bytes; anything longer cannot name an object.
const MAX_IDENT_BYTES: usize = 63;

/// What the request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Table(String),
    Rpc(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Head,
    Post,
    Patch,
    /// PUT: insert or replace one row, addressed by its primary key.
    Put,
    Delete,
}

impl Verb {
    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::Head)
    }
}

/// One step of a JSON path: `->key` (JSON) or `->>key` (text). A key of digits is an
/// array index, as in PostgREST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    pub as_text: bool,
    pub key: String,
}

impl JsonStep {
    pub fn is_index(&self) -> bool {
        let digits = self.key.strip_prefix('-').unwrap_or(&self.key);
        !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`: every column the caller may read.
    Star,
    /// `[alias:]column[->key...][::type]`.
    Column {
        name: String,
        alias: Option<String>,
        json: Vec<JsonStep>,
        /// A type name of letters, digits and `_` (optionally `[]`), written unquoted.
        cast: Option<String>,
    },
    /// `[alias:]relation[!hint][!inner](...)`: rows of a related table, by foreign key.
    Embed(Embed),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    /// The related table (or a foreign key's column or constraint name).
    pub name: String,
    pub alias: Option<String>,
    /// `!fk_name` or `!column`: which foreign key, when there are several.
    pub hint: Option<String>,
    /// `!inner`: parents without a related row are left out.
    pub inner: bool,
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The name the embedded rows go by in the response and in `key.col=` parameters.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Like,
    Ilike,
    Match,
    Imatch,
    /// `cs`, `cd`, `ov`: arrays, ranges and jsonb.
    Contains,
    ContainedIn,
    Overlaps,
    IsDistinct,
}

impl CmpOp {
    /// The SQL operator: from this fixed table only, never from the request.
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Neq => "<>",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Like => "like",
            CmpOp::Ilike => "ilike",
            CmpOp::Match => "~",
            CmpOp::Imatch => "~*",
            CmpOp::Contains => "@>",
            CmpOp::ContainedIn => "<@",
            CmpOp::Overlaps => "&&",
            CmpOp::IsDistinct => "is distinct from",
        }
    }

    /// Compared as text, whatever the column's type.
    pub fn is_textual(self) -> bool {
        matches!(
            self,
            CmpOp::Like | CmpOp::Ilike | CmpOp::Match | CmpOp::Imatch
        )
    }
}

/// The full-text operators and the PostgreSQL function that parses their query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fts {
    /// `fts`: `to_tsquery`.
    Query,
    /// `plfts`: `plainto_tsquery`.
    Plain,
    /// `phfts`: `phraseto_tsquery`.
    Phrase,
    /// `wfts`: `websearch_to_tsquery`.
    Websearch,
}

impl Fts {
    pub fn function(self) -> &'static str {
        match self {
            Fts::Query => "to_tsquery",
            Fts::Plain => "plainto_tsquery",
            Fts::Phrase => "phraseto_tsquery",
            Fts::Websearch => "websearch_to_tsquery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

impl IsValue {
    pub fn sql(self) -> &'static str {
        match self {
            IsValue::Null => "is null",
            IsValue::NotNull => "is not null",
            IsValue::True => "is true",
            IsValue::False => "is false",
            IsValue::Unknown => "is unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Cmp(CmpOp, String),
    In(Vec<String>),
    Is(IsValue),
    /// Full text search; the language (a text search configuration) is bound too.
    Fts {
        kind: Fts,
        language: Option<String>,
        query: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    /// A JSON path into the column, if any.
    pub json: Vec<JsonStep>,
    pub negate: bool,
    pub op: Op,
}

/// A filter or a logic tree of them (`or=(a.eq.1,and(b.gt.2,c.lt.3))`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Filter(Filter),
    Tree {
        or: bool,
        negate: bool,
        children: Vec<Condition>,
    },
}

/// Filters, order and page of an embedded resource (`sender.display_name=eq.x`,
/// `reactions.order=created_at.desc`, `reactions.limit=5`), by its path of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedParams {
    pub path: Vec<String>,
    pub filters: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub column: String,
    pub descending: bool,
    /// `Some(true)` nulls first, `Some(false)` nulls last, `None` PostgreSQL's default.
    pub nulls_first: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

/// `Prefer` header values, PostgREST's set. When a preference comes twice, the first wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    pub return_: Option<Return>,
    /// `count=exact` (also `planned`/`estimated`, which Ripple answers exactly).
    pub count: bool,
    /// The count preference as written, echoed in `Preference-Applied`.
    pub count_name: Option<&'static str>,
    pub resolution: Option<Resolution>,
    /// `missing=default` (`Some(true)`) or `missing=null` (`Some(false)`).
    pub missing_default: Option<bool>,
    /// `tx=rollback` (`Some(true)`) or `tx=commit` (`Some(false)`).
    pub rollback: Option<bool>,
    /// `handling=strict` (`Some(true)`) or `handling=lenient` (`Some(false)`).
    pub strict: Option<bool>,
}

impl Preferences {
    /// The `Preference-Applied` value: every preference Ripple honored, in PostgREST's order.
    pub fn applied(&self) -> Option<String> {
        let mut v: Vec<&str> = Vec::new();
        match self.resolution {
            Some(Resolution::MergeDuplicates) => v.push("resolution=merge-duplicates"),
            Some(Resolution::IgnoreDuplicates) => v.push("resolution=ignore-duplicates"),
            None => {}
        }
        match self.missing_default {
            Some(true) => v.push("missing=default"),
            Some(false) => v.push("missing=null"),
            None => {}
        }
        match self.return_ {
            Some(Return::Representation) => v.push("return=representation"),
            Some(Return::Minimal) => v.push("return=minimal"),
            None => {}
        }
        if let Some(c) = self.count_name {
            v.push(c);
        }
        match self.rollback {
            Some(true) => v.push("tx=rollback"),
            Some(false) => v.push("tx=commit"),
            None => {}
        }
        match self.strict {
            Some(true) => v.push("handling=strict"),
            Some(false) => v.push("handling=lenient"),
            None => {}
        }
        (!v.is_empty()).then(|| v.join(", "))
    }
}

/// The response form the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A JSON array (or, for RPC, the function's own shape).
    Json { strip_nulls: bool },
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    Object { strip_nulls: bool },
}

impl Accept {
    pub fn strip_nulls(self) -> bool {
        match self {
            Accept::Json { strip_nulls } | Accept::Object { strip_nulls } => strip_nulls,
        }
    }
}

/// The JSON body, checked for the shape its verb needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The body text as received (valid JSON), bound as one `json` parameter.
    pub json: String,
    pub value: Value,
    /// The columns (insert/update) or argument names (RPC) the body names.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub verb: Verb,
    pub target: Target,
    /// The schema asked for (or the default), one of the exposed ones.
    pub schema: String,
    /// Empty when `select=` was not given.
    pub select: Vec<SelectItem>,
    pub filters: Vec<Condition>,
    /// Parameters that apply to embedded resources.
    pub embeds: Vec<EmbedParams>,
    pub order: Vec<OrderTerm>,
    pub offset: u64,
    pub limit: Option<u64>,
    /// `columns=` on insert.
    pub columns: Option<Vec<String>>,
    /// `on_conflict=` on upsert.
    pub on_conflict: Option<Vec<String>>,
    pub prefer: Preferences,
    pub accept: Accept,
    pub payload: Option<Payload>,
    /// For `GET /rpc/fn?...`: the query parameters that are not reserved. Which are
    /// arguments and which are filters only the function's signature can tell.
    pub rpc_params: Vec<(String, String)>,
}

/// What parsing needs besides the request.
pub struct Settings<'a> {
    /// Exposed schemas; the first is the default.
    pub schemas: &'a [String],
}

/// The parts of an HTTP request the REST layer reads.
pub struct RawRequest<'a> {
    pub method: &'a Method,
    /// The path after `/rest/v1/`, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

pub fn parse(raw: &RawRequest<'_>, settings: &Settings<'_>) -> Result<ApiRequest, ApiError> {
    let target = parse_path(raw.path)?;
    let verb = match (raw.method, &target) {
        (&Method::GET, _) => Verb::Get,
        (&Method::HEAD, _) => Verb::Head,
        (&Method::POST, _) => Verb::Post,
        (&Method::PATCH, Target::Table(_)) => Verb::Patch,
        (&Method::PUT, Target::Table(_)) => Verb::Put,
        (&Method::DELETE, Target::Table(_)) => Verb::Delete,
        (_, Target::Rpc(_)) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "PGRST101",
                "for functions, only GET, HEAD and POST are allowed",
            ))
        }
        (m, Target::Table(_)) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "PGRST117",
                format!("unsupported HTTP method: {}", clip(m.as_str())),
            ))
        }
    };
    let schema = parse_profile(raw.headers, verb, settings.schemas)?;
    let accept = parse_accept(raw.headers)?;
    let prefer = parse_prefer(raw.headers)?;

    let mut req = ApiRequest {
        verb,
        target,
        schema,
        select: Vec::new(),
        filters: Vec::new(),
        embeds: Vec::new(),
        order: Vec::new(),
        offset: 0,
        limit: None,
        columns: None,
        on_conflict: None,
        prefer,
        accept,
        payload: None,
        rpc_params: Vec::new(),
    };

    let mut query_offset = None;
    let mut query_limit = None;
    for (key, value) in url::form_urlencoded::parse(raw.query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "select" => req.select = parse_select(&value)?,
            "order" => req.order = parse_order(&value)?,
            "limit" => query_limit = Some(parse_count("limit", &value)?),
            "offset" => query_offset = Some(parse_count("offset", &value)?),
            "columns" => req.columns = Some(parse_ident_list("columns", &value)?),
            "on_conflict" => req.on_conflict = Some(parse_ident_list("on_conflict", &value)?),
            "apikey" => {} // a credential, read by the caller's authentication
            _ if matches!(req.target, Target::Rpc(_)) && verb.is_read() && !is_tree_key(&key) => {
                // Arguments or filters: decided against the signature (rpc.rs).
                req.rpc_params.push((key.into_owned(), value.into_owned()));
            }
            _ => parse_scoped(&mut req, &key, &value)?,
        }
    }
    let header_range = if verb.is_read() {
        parse_range_header(raw.headers)?
    } else {
        None
    };
    (req.offset, req.limit) = combine_ranges(query_offset, query_limit, header_range);
    if matches!(verb, Verb::Patch | Verb::Put | Verb::Delete)
        && (req.limit.is_some() || req.offset > 0)
    {
        return Err(ApiError::bad_query(
            "limit and offset are not supported on PATCH, PUT and DELETE; filter the rows instead",
        ));
    }

    req.payload = parse_body(raw, verb, &req.target, req.columns.as_deref())?;
    Ok(req)
}

fn parse_path(path: &str) -> Result<Target, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PGRST125",
            "invalid path: use /rest/v1/<table> or /rest/v1/rpc/<function>",
        )
    };
    let segments: Vec<&str> = path.split('/').collect();
    let decode = |s: &str| -> Result<String, ApiError> {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::bad_query("the path is not valid UTF-8"))
    };
    match segments.as_slice() {
        ["rpc", name] if !name.is_empty() => Ok(Target::Rpc(parse_ident(&decode(name)?)?)),
        [name] if !name.is_empty() => Ok(Target::Table(parse_ident(&decode(name)?)?)),
        _ => Err(not_found()),
    }
}

/// A column, table or function name as written in a request: plain (letters, digits, `_`,
/// `$`) or double-quoted (anything printable but `"` and `\`). Either way it is only a
/// candidate until the catalog knows it.
pub fn parse_ident(s: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_query(format!("invalid identifier \"{}\"", clip(s))).with_details(why)
    };
    let name = if let Some(inner) = s.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| bad("unterminated quoted identifier"))?;
        if inner.contains(['"', '\\']) || inner.chars().any(char::is_control) {
            return Err(bad(
                "quoted identifiers may not contain quotes, backslashes or control characters",
            ));
        }
        inner
    } else {
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            return Err(bad(
                "identifiers are letters, digits, _ and $ (or double-quoted)",
            ));
        }
        s
    };
    if name.is_empty() {
        return Err(bad("empty identifier"));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(bad("identifiers are at most 63 bytes"));
    }
    Ok(name.to_string())
}

/// Nesting deeper than this in `select=` or logic trees is refused: it is no query a
/// frontend writes, and it bounds the recursion.
const MAX_DEPTH: usize = 8;

fn parse_select(value: &str) -> Result<Vec<SelectItem>, ApiError> {
    parse_select_at(value, 0)
}

fn parse_select_at(value: &str, depth: usize) -> Result<Vec<SelectItem>, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_query("select= is nested too deeply"));
    }
    let mut items = Vec::new();
    for raw in split_outside(value, ',')? {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        if item == "*" {
            items.push(SelectItem::Star);
            continue;
        }
        if let Some(open) = find_outside(item, '(') {
            items.push(SelectItem::Embed(parse_embed(item, open, depth)?));
            continue;
        }
        if item.contains(')') {
            return Err(ApiError::bad_query(format!(
                "unbalanced parentheses in select=: \"{}\"",
                clip(item)
            )));
        }
        let (alias, rest) = split_alias(item)?;
        let (field, cast) = match rsplit_outside_str(rest, "::") {
            Some((f, c)) => (f, Some(parse_cast(c)?)),
            None => (rest, None),
        };
        let (name, json) = parse_field(field)?;
        items.push(SelectItem::Column {
            name,
            alias,
            json,
            cast,
        });
    }
    Ok(items)
}

/// `[alias:]name[!hint][!inner](items)`; `open` is where the parenthesis opens.
fn parse_embed(item: &str, open: usize, depth: usize) -> Result<Embed, ApiError> {
    let inner_text = item[open + 1..].strip_suffix(')').ok_or_else(|| {
        ApiError::bad_query(format!(
            "an embedded resource ends with its closing parenthesis: \"{}\"",
            clip(item)
        ))
    })?;
    let (alias, head) = split_alias(&item[..open])?;
    let mut parts = split_all_unquoted(head, '!').into_iter();
    let name = parse_ident(parts.next().unwrap_or("").trim())?;
    let mut embed = Embed {
        name,
        alias,
        hint: None,
        inner: false,
        select: Vec::new(),
    };
    for modifier in parts {
        match modifier.trim() {
            "inner" => embed.inner = true,
            "left" => embed.inner = false,
            hint if embed.hint.is_none() => embed.hint = Some(parse_ident(hint)?),
            other => {
                return Err(ApiError::bad_query(format!(
                    "an embedded resource takes one hint, then inner or left: \"{}\"",
                    clip(other)
                )))
            }
        }
    }
    embed.select = parse_select_at(inner_text, depth + 1)?;
    Ok(embed)
}

/// `alias:rest` (a single colon outside quotes; `::` is a cast).
fn split_alias(item: &str) -> Result<(Option<String>, &str), ApiError> {
    let mut quoted = false;
    let bytes = item.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b':' if !quoted => {
                let double = bytes.get(i + 1) == Some(&b':') || (i > 0 && bytes[i - 1] == b':');
                if !double {
                    let alias = parse_ident(item[..i].trim())?;
                    return Ok((Some(alias), item[i + 1..].trim()));
                }
            }
            _ => {}
        }
    }
    Ok((None, item.trim()))
}

/// `column` or `column->key->>key`.
fn parse_field(field: &str) -> Result<(String, Vec<JsonStep>), ApiError> {
    let mut pieces = split_outside_str(field, "->").into_iter();
    let name = parse_ident(pieces.next().unwrap_or("").trim())?;
    let mut json = Vec::new();
    for piece in pieces {
        let (as_text, key) = match piece.strip_prefix('>') {
            Some(k) => (true, k),
            None => (false, piece),
        };
        let key = key.trim();
        let is_index = {
            let d = key.strip_prefix('-').unwrap_or(key);
            !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
        };
        let key = if is_index {
            key.to_string()
        } else {
            parse_ident(key)?
        };
        json.push(JsonStep { as_text, key });
    }
    Ok((name, json))
}

/// A cast's type: a plain type name, checked strictly because it is written into SQL.
fn parse_cast(cast: &str) -> Result<String, ApiError> {
    let cast = cast.trim();
    let base = cast.strip_suffix("[]").unwrap_or(cast);
    let ok = base
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && base.len() <= MAX_IDENT_BYTES;
    if !ok {
        return Err(ApiError::bad_query(format!(
            "\"{}\" is not a type a column can be cast to",
            clip(cast)
        ))
        .with_hint("use a plain type name, e.g. col::text"));
    }
    Ok(cast.to_ascii_lowercase())
}

fn parse_order(value: &str) -> Result<Vec<OrderTerm>, ApiError> {
    let mut terms = Vec::new();
    for raw in split_top_level(value) {
        let mut parts = split_dots(raw.trim()).into_iter();
        let column = parse_ident(parts.next().unwrap_or(""))?;
        let mut term = OrderTerm {
            column,
            descending: false,
            nulls_first: None,
        };
        for modifier in parts {
            match modifier {
                "asc" => term.descending = false,
                "desc" => term.descending = true,
                "nullsfirst" => term.nulls_first = Some(true),
                "nullslast" => term.nulls_first = Some(false),
                other => {
                    return Err(ApiError::bad_query(format!(
                        "unknown order modifier \"{}\"",
                        clip(other)
                    ))
                    .with_hint("use asc, desc, nullsfirst or nullslast"))
                }
            }
        }
        terms.push(term);
    }
    Ok(terms)
}

fn parse_count(name: &str, value: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_query(format!(
            "{name} must be a non-negative integer"
        )));
    }
    value
        .parse()
        .map_err(|_| ApiError::bad_query(format!("{name} is too large")))
}

fn parse_ident_list(name: &str, value: &str) -> Result<Vec<String>, ApiError> {
    let idents: Vec<String> = split_top_level(value)
        .into_iter()
        .map(|s| parse_ident(s.trim()))
        .collect::<Result<_, _>>()?;
    if idents.is_empty() {
        return Err(ApiError::bad_query(format!("{name}= names no columns")));
    }
    Ok(idents)
}

/// Does this query key hold a logic tree (`or`, `and`, `not.or`, `x.or`, ...)?
fn is_tree_key(key: &str) -> bool {
    let parts = split_all_unquoted(key, '.');
    matches!(parts.last(), Some(&"or") | Some(&"and"))
}

/// A query parameter that is neither reserved nor an RPC argument: a filter, a logic tree,
/// or the order, limit or offset of an embedded resource, addressed by its path of keys.
fn parse_scoped(req: &mut ApiRequest, key: &str, value: &str) -> Result<(), ApiError> {
    let mut parts: Vec<&str> = split_all_unquoted(key, '.');
    let last = parts.pop().unwrap_or("");
    let mut negate_tree = false;
    if matches!(last, "or" | "and") && parts.last() == Some(&"not") {
        parts.pop();
        negate_tree = true;
    }
    let path: Vec<String> = parts
        .iter()
        .map(|p| parse_ident(p))
        .collect::<Result<_, _>>()?;
    let scope = |req: &mut ApiRequest| -> usize {
        match req.embeds.iter().position(|e| e.path == path) {
            Some(i) => i,
            None => {
                req.embeds.push(EmbedParams {
                    path: path.clone(),
                    ..Default::default()
                });
                req.embeds.len() - 1
            }
        }
    };
    match last {
        "or" | "and" => {
            let children = parse_tree_items(value, 0)?;
            let tree = Condition::Tree {
                or: last == "or",
                negate: negate_tree,
                children,
            };
            if path.is_empty() {
                req.filters.push(tree);
            } else {
                let i = scope(req);
                req.embeds[i].filters.push(tree);
            }
        }
        "order" | "limit" | "offset" if !path.is_empty() => {
            let i = scope(req);
            match last {
                "order" => req.embeds[i].order = parse_order(value)?,
                "limit" => req.embeds[i].limit = Some(parse_count("limit", value)?),
                _ => req.embeds[i].offset = parse_count("offset", value)?,
            }
        }
        _ => {
            let filter = parse_filter(last, value)?;
            if path.is_empty() {
                req.filters.push(Condition::Filter(filter));
            } else {
                let i = scope(req);
                req.embeds[i].filters.push(Condition::Filter(filter));
            }
        }
    }
    Ok(())
}

/// `(item,item,...)` of a logic tree; an item is `field.[not.]op.value`,
/// `[not.]and(...)` or `[not.]or(...)`.
fn parse_tree_items(value: &str, depth: usize) -> Result<Vec<Condition>, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_query("the logic tree is nested too deeply"));
    }
    let inner = value
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_query(format!(
                "\"{}\" is not a logic tree: expected a parenthesised list",
                clip(value)
            ))
            .with_hint("e.g. or=(id.eq.1,and(body.eq.x,kind.eq.text))")
        })?;
    let mut out = Vec::new();
    for item in split_outside(inner, ',')? {
        let item = item.trim();
        let (negate, rest) = match item.strip_prefix("not.") {
            Some(r) if r.starts_with("and(") || r.starts_with("or(") => (true, r),
            _ => (false, item),
        };
        if let Some(list) = rest.strip_prefix("and").filter(|l| l.starts_with('(')) {
            out.push(Condition::Tree {
                or: false,
                negate,
                children: parse_tree_items(list, depth + 1)?,
            });
        } else if let Some(list) = rest.strip_prefix("or").filter(|l| l.starts_with('(')) {
            out.push(Condition::Tree {
                or: true,
                negate,
                children: parse_tree_items(list, depth + 1)?,
            });
        } else {
            let (field, filter) = split_unquoted(item, '.').ok_or_else(|| {
                ApiError::bad_query(format!(
                    "\"{}\" is not a filter: expected column.operator.value",
                    clip(item)
                ))
            })?;
            let mut f = parse_filter(field, filter)?;
            // Inside a tree a value may be double-quoted to hold commas and parentheses.
            if let Op::Cmp(_, v) = &mut f.op {
                if let Some(unquoted) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    *v = unquoted.replace("\\\"", "\"");
                }
            }
            out.push(Condition::Filter(f));
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_query(
            "a logic tree needs at least one filter",
        ));
    }
    Ok(out)
}

/// `col=[not.]op.value` (the column may carry a JSON path: `data->a->>b`).
pub fn parse_filter(key: &str, value: &str) -> Result<Filter, ApiError> {
    let (column, json) = parse_field(key)?;
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (op, operand) = rest.split_once('.').ok_or_else(|| {
        ApiError::bad_query(format!(
            "\"{}\" is not a filter: expected operator.value",
            clip(value)
        ))
        .with_hint("e.g. id=eq.42")
    })?;
    let cmp = |op| Ok(Op::Cmp(op, operand.to_string()));
    // `fts(english)`: the language in parentheses.
    let (op, language) = match op.split_once('(') {
        Some((name, lang)) => {
            let lang = lang.strip_suffix(')').ok_or_else(|| {
                ApiError::bad_query(format!("unterminated language in \"{}\"", clip(op)))
            })?;
            (name, Some(parse_ident(lang)?))
        }
        None => (op, None),
    };
    let fts = |kind| {
        Ok(Op::Fts {
            kind,
            language: language.clone(),
            query: operand.to_string(),
        })
    };
    if language.is_some() && !matches!(op, "fts" | "plfts" | "phfts" | "wfts") {
        return Err(ApiError::bad_query(format!(
            "only the full-text operators take a language, not \"{}\"",
            clip(op)
        )));
    }
    let op = match op {
        "eq" => cmp(CmpOp::Eq),
        "neq" => cmp(CmpOp::Neq),
        "lt" => cmp(CmpOp::Lt),
        "lte" => cmp(CmpOp::Lte),
        "gt" => cmp(CmpOp::Gt),
        "gte" => cmp(CmpOp::Gte),
        // PostgREST lets `*` stand for `%`, which URLs mangle.
        "like" => Ok(Op::Cmp(CmpOp::Like, operand.replace('*', "%"))),
        "ilike" => Ok(Op::Cmp(CmpOp::Ilike, operand.replace('*', "%"))),
        "match" => cmp(CmpOp::Match),
        "imatch" => cmp(CmpOp::Imatch),
        "cs" => cmp(CmpOp::Contains),
        "cd" => cmp(CmpOp::ContainedIn),
        "ov" => cmp(CmpOp::Overlaps),
        "isdistinct" => cmp(CmpOp::IsDistinct),
        "fts" => fts(Fts::Query),
        "plfts" => fts(Fts::Plain),
        "phfts" => fts(Fts::Phrase),
        "wfts" => fts(Fts::Websearch),
        "in" => parse_in_list(operand).map(Op::In),
        "is" => match operand.to_ascii_lowercase().as_str() {
            "null" => Ok(Op::Is(IsValue::Null)),
            "not_null" => Ok(Op::Is(IsValue::NotNull)),
            "true" => Ok(Op::Is(IsValue::True)),
            "false" => Ok(Op::Is(IsValue::False)),
            "unknown" => Ok(Op::Is(IsValue::Unknown)),
            _ => Err(ApiError::bad_query(format!(
                "is.{} is not supported: use null, not_null, true, false or unknown",
                clip(operand)
            ))),
        },
        other => Err(ApiError::bad_query(format!(
            "unknown or unsupported operator \"{}\"",
            clip(other)
        ))
        .with_hint(
            "Ripple supports eq, neq, lt, lte, gt, gte, like, ilike, match, imatch, in, is, \
             isdistinct, cs, cd, ov, fts, plfts, phfts, wfts",
        )),
    }?;
    Ok(Filter {
        column,
        json,
        negate,
        op,
    })
}

/// `(a,b,"c,d","e\"f")`.
fn parse_in_list(operand: &str) -> Result<Vec<String>, ApiError> {
    let inner = operand
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_query("in. needs a parenthesised list").with_hint("e.g. id=in.(1,2,3)")
        })?;
    let mut values = Vec::new();
    if inner.is_empty() {
        return Ok(values);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => item.push(c),
                        None => {
                            return Err(ApiError::bad_query("unterminated quoted value in in.()"))
                        }
                    },
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(ApiError::bad_query("unterminated quoted value in in.()")),
                }
            }
            match chars.next() {
                None => {
                    values.push(item);
                    return Ok(values);
                }
                Some(',') => values.push(item),
                Some(_) => {
                    return Err(ApiError::bad_query(
                        "a quoted value in in.() must be followed by a comma",
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        values.push(item);
                        return Ok(values);
                    }
                    Some(',') => break,
                    Some(c) => item.push(c),
                }
            }
            values.push(item);
        }
    }
}

fn parse_profile(headers: &HeaderMap, verb: Verb, schemas: &[String]) -> Result<String, ApiError> {
    let name = if verb.is_read() {
        "accept-profile"
    } else {
        "content-profile"
    };
    let default = schemas.first().cloned().unwrap_or_else(|| "public".into());
    let Some(value) = headers.get(name) else {
        return Ok(default);
    };
    let wanted = value.to_str().unwrap_or("").trim();
    if let Some(s) = schemas.iter().find(|s| s.as_str() == wanted) {
        return Ok(s.clone());
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "PGRST106",
        format!(
            "The schema must be one of the following: {}",
            schemas.join(", ")
        ),
    ))
}

fn parse_accept(headers: &HeaderMap) -> Result<Accept, ApiError> {
    let Some(value) = headers.get(ACCEPT) else {
        return Ok(Accept::Json { strip_nulls: false });
    };
    let value = value.to_str().unwrap_or("");
    let mut first_unsupported = None;
    for range in value.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let strip_nulls = params.any(|p| p.eq_ignore_ascii_case("nulls=stripped"));
        match media.as_str() {
            ""
            | "*/*"
            | "application/*"
            | "application/json"
            | "application/vnd.pgrst.array+json" => return Ok(Accept::Json { strip_nulls }),
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => {
                return Ok(Accept::Object { strip_nulls })
            }
            other => {
                first_unsupported.get_or_insert_with(|| other.to_string());
            }
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "PGRST107",
        format!(
            "none of these media types are available: {}",
            clip(first_unsupported.as_deref().unwrap_or(value))
        ),
    ))
}

/// `Prefer` may come as several headers and as comma-separated lists. Unknown preferences
/// are ignored (`handling=lenient`, the default) or refused with PGRST122
/// (`handling=strict`), as PostgREST does.
fn parse_prefer(headers: &HeaderMap) -> Result<Preferences, ApiError> {
    let mut p = Preferences::default();
    let mut invalid: Vec<String> = Vec::new();
    for value in headers.get_all("prefer") {
        for pref in value.to_str().unwrap_or("").split(',') {
            let pref = pref.trim();
            match pref {
                "" => {}
                "return=minimal" => {
                    p.return_.get_or_insert(Return::Minimal);
                }
                "return=representation" => {
                    p.return_.get_or_insert(Return::Representation);
                }
                "count=exact" | "count=planned" | "count=estimated" => {
                    p.count = true;
                    p.count_name.get_or_insert(match pref {
                        "count=exact" => "count=exact",
                        "count=planned" => "count=planned",
                        _ => "count=estimated",
                    });
                }
                "resolution=merge-duplicates" => {
                    p.resolution.get_or_insert(Resolution::MergeDuplicates);
                }
                "resolution=ignore-duplicates" => {
                    p.resolution.get_or_insert(Resolution::IgnoreDuplicates);
                }
                "missing=default" => {
                    p.missing_default.get_or_insert(true);
                }
                "missing=null" => {
                    p.missing_default.get_or_insert(false);
                }
                "tx=rollback" => {
                    p.rollback.get_or_insert(true);
                }
                "tx=commit" => {
                    p.rollback.get_or_insert(false);
                }
                "handling=strict" => {
                    p.strict.get_or_insert(true);
                }
                "handling=lenient" => {
                    p.strict.get_or_insert(false);
                }
                other => invalid.push(clip(other)),
            }
        }
    }
    if p.strict == Some(true) && !invalid.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST122",
            "Invalid preferences given with handling=strict",
        )
        .with_details(format!("Invalid preferences: {}", invalid.join(", "))));
    }
    Ok(p)
}

/// `Range: 0-9` (or `items=0-9`): rows 0 to 9 inclusive. The end may be open (`10-`).
fn parse_range_header(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, ApiError> {
    let Some(value) = headers.get(RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "PGRST103",
            "Requested range not satisfiable",
        )
    };
    let text = value.to_str().map_err(|_| unsatisfiable())?.trim();
    let text = text.strip_prefix("items=").unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(unsatisfiable)?;
    let number = |s: &str| -> Result<u64, ApiError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unsatisfiable());
        }
        s.parse().map_err(|_| unsatisfiable())
    };
    let start = number(start.trim())?;
    let end = match end.trim() {
        "" => None,
        e => Some(number(e)?),
    };
    if matches!(end, Some(e) if e < start) {
        return Err(unsatisfiable().with_details("the end of the range is before its start"));
    }
    Ok(Some((start, end)))
}

/// The rows both `limit`/`offset` and a `Range` header allow.
fn combine_ranges(
    offset: Option<u64>,
    limit: Option<u64>,
    header: Option<(u64, Option<u64>)>,
) -> (u64, Option<u64>) {
    let q_lo = offset.unwrap_or(0);
    let q_hi = limit.map(|l| q_lo.saturating_add(l));
    let (h_lo, h_hi) = match header {
        Some((start, end)) => (start, end.map(|e| e.saturating_add(1))),
        None => (0, None),
    };
    let lo = q_lo.max(h_lo);
    let hi = match (q_hi, h_hi) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (lo, hi.map(|hi| hi.saturating_sub(lo)))
}

fn parse_body(
    raw: &RawRequest<'_>,
    verb: Verb,
    target: &Target,
    columns: Option<&[String]>,
) -> Result<Option<Payload>, ApiError> {
    if !matches!(verb, Verb::Post | Verb::Patch | Verb::Put) {
        return Ok(None);
    }
    if let Some(ct) = raw.headers.get(CONTENT_TYPE) {
        let media = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "PGRST107",
                format!(
                    "the Content-Type \"{}\" is not supported: send application/json",
                    clip(&media)
                ),
            ));
        }
    }
    let is_rpc = matches!(target, Target::Rpc(_));
    if raw.body.iter().all(u8::is_ascii_whitespace) {
        if is_rpc {
            // A function called without arguments.
            return Ok(Some(Payload {
                json: "{}".into(),
                value: Value::Object(Default::default()),
                keys: Vec::new(),
            }));
        }
        return Err(ApiError::bad_body("Empty or invalid json"));
    }
    let value: Value = serde_json::from_slice(raw.body).map_err(|e| {
        ApiError::bad_body("Empty or invalid json").with_details(format!(
            "line {}, column {}: {}",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected data",
                serde_json::error::Category::Io => "could not read",
            }
        ))
    })?;
    // serde_json has checked UTF-8 along the way.
    let json = String::from_utf8(raw.body.to_vec())
        .map_err(|_| ApiError::bad_body("Empty or invalid json"))?;
    let keys = match (&value, verb, is_rpc) {
        (Value::Object(map), _, _) => map.keys().map(|k| check_key(k)).collect::<Result<_, _>>()?,
        (Value::Array(_), Verb::Post, false) => array_keys(&value, columns)?,
        (Value::Array(_), _, true) => {
            return Err(ApiError::bad_body(
                "a function's arguments are a JSON object; bulk calls are not supported",
            ))
        }
        (_, Verb::Patch, _) => return Err(ApiError::bad_body("PATCH needs a JSON object")),
        (_, Verb::Put, _) => return Err(ApiError::bad_body("PUT needs one JSON object")),
        _ => {
            return Err(ApiError::bad_body(
                "the body must be a JSON object or an array of objects",
            ))
        }
    };
    let keys = match (columns, &value) {
        (Some(cols), Value::Object(_)) if verb == Verb::Post && !is_rpc => cols.to_vec(),
        _ => keys,
    };
    Ok(Some(Payload { json, value, keys }))
}

/// Body keys name columns or arguments, so they obey identifier rules too.
fn check_key(k: &str) -> Result<String, ApiError> {
    if k.is_empty() || k.len() > MAX_IDENT_BYTES || k.chars().any(|c| c == '"' || c.is_control()) {
        return Err(ApiError::bad_body(format!(
            "\"{}\" cannot name a column or argument",
            clip(k)
        )));
    }
    Ok(k.to_string())
}

/// The columns of a bulk insert: `columns=` if given, else the keys every object shares.
fn array_keys(value: &Value, columns: Option<&[String]>) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        unreachable!("called on arrays")
    };
    let mut first: Option<Vec<String>> = None;
    for item in items {
        let Value::Object(map) = item else {
            return Err(ApiError::bad_body(
                "every element of the array must be an object",
            ));
        };
        let mut keys: Vec<String> = map.keys().map(|k| check_key(k)).collect::<Result<_, _>>()?;
        if columns.is_some() {
            continue;
        }
        keys.sort();
        match &first {
            None => first = Some(keys),
            Some(f) if *f == keys => {}
            Some(_) => return Err(ApiError::bad_body("All object keys must match")),
        }
    }
    if let Some(cols) = columns {
        return Ok(cols.to_vec());
    }
    // Keep the first object's key order: it is the order the client wrote.
    Ok(match items.first() {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    })
}

/// Splits on commas outside double quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    split_all_unquoted(s, ',')
}

/// Splits on dots outside double quotes.
fn split_dots(s: &str) -> Vec<&str> {
    split_all_unquoted(s, '.')
}

/// Splits on `sep` wherever it stands outside double quotes.
fn split_all_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + sep.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits on `sep` outside double quotes and parentheses; unbalanced parentheses are a 400.
fn split_outside(s: &str, sep: char) -> Result<Vec<&str>, ApiError> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut depth = 0usize;
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| ApiError::bad_query("unbalanced parentheses"))?
            }
            c if c == sep && !quoted && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + sep.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(ApiError::bad_query(format!(
            "unbalanced parentheses or quotes in \"{}\"",
            clip(s)
        )));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// The first `c` outside double quotes.
fn find_outside(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    for (i, ch) in s.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if ch == c && !quoted {
            return Some(i);
        }
    }
    None
}

/// Splits on a multi-character separator outside double quotes.
fn split_outside_str<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'"' {
            quoted = !quoted;
        } else if !quoted && bytes[i..].starts_with(sep.as_bytes()) {
            parts.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// Splits once on the last `sep` outside double quotes.
fn rsplit_outside_str<'a>(s: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let parts = split_outside_str(s, sep);
    if parts.len() < 2 {
        return None;
    }
    let last = parts[parts.len() - 1];
    Some((&s[..s.len() - last.len() - sep.len()], last))
}

/// Splits once on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            return Some((&s[..i], &s[i + c.len_utf8()..]));
        }
    }
    None
}

/// Request text echoed in an error message, kept short.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}
