//! Operations as MCP tools: each exposed operation compiles, with the snapshot, into a tool
//! with a stable name, an input schema that merges its parameters and body, an output schema
//! when the response is described, and annotations. [`Tool::request`] turns a call's arguments
//! back into the operation's HTTP request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use http::Method;
use serde_json::{Map, Value, json};

use crate::model::{Collection, Operation, ParameterLocation, ParameterType};
use crate::route::template::PathTemplate;

/// Names of the catalogue mode's discovery tools; no operation's tool may take one.
pub const DISCOVERY_TOOLS: [&str; 5] = [
    "list_collections",
    "list_endpoints",
    "search_endpoints",
    "endpoint_details",
    "execute_endpoint",
];

/// The longest tool name the specification recommends.
const MAX_NAME: usize = 128;

/// An operation as a tool.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// The method the tool calls with (an operation serving `GET` and `HEAD` is called with
    /// `GET`).
    pub method: Method,
    pub input_schema: Value,
    /// The `structuredContent` schema: the response schema, wrapped as `{"result": …}` when
    /// its root is not an object (structured content is always an object).
    pub output_schema: Option<Value>,
    /// Whether structured content is the response wrapped as `{"result": …}`: decided with
    /// the output schema when there is one, so the two always agree.
    wrap_output: Option<bool>,
    pub annotations: Map<String, Value>,
    /// Where each argument travels.
    pub arguments: Vec<Argument>,
    /// The argument holding the request body, for methods that send one.
    pub body: Option<String>,
    /// The argument holding a wildcard's remainder (`/files/*`).
    pub subpath: Option<String>,
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

/// One argument that becomes a path, query or header parameter.
#[derive(Debug, Clone)]
pub struct Argument {
    /// Its name in the tool's input schema.
    pub property: String,
    pub location: ParameterLocation,
    /// Its name on the wire.
    pub name: String,
}

/// The HTTP request a tool call makes, before the gateway adds anything.
#[derive(Debug, PartialEq)]
pub struct Built {
    /// Decoded path parameter values by name, and the wildcard's remainder.
    pub path_params: HashMap<String, String>,
    pub rest: String,
    /// Encoded query string, without `?`.
    pub query: Option<String>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Option<Vec<u8>>,
}

/// Why arguments cannot make a request: told to the agent so it can correct them.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ArgumentError(pub String);

impl Tool {
    /// Compiles `op` of `collection` under `name`.
    pub fn compile(name: String, collection: &Collection, op: &Operation) -> Self {
        let template = PathTemplate::parse(&op.path).ok();
        let method = op
            .methods
            .iter()
            .find(|m| m.as_str() != "HEAD")
            .or(op.methods.first())
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::GET);
        let exposure = op.mcp.clone().unwrap_or_default();

        let mut properties = Map::new();
        let mut required = Vec::new();
        let mut arguments = Vec::new();
        let mut taken = HashSet::new();
        // Each parameter keeps its own name unless another location already uses it; then it
        // is qualified by its location (`header_id`), never silently merged.
        let claim = |wanted: &str, location: &str, taken: &mut HashSet<String>| {
            let mut name = wanted.to_owned();
            if taken.contains(&name) {
                name = format!("{location}_{wanted}");
            }
            let base = name.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
            taken.insert(name.clone());
            name
        };
        // Path parameters first (in template order), declared or not: the path needs them.
        let template_params: Vec<String> = template
            .iter()
            .flat_map(|t| t.params().map(str::to_owned))
            .collect();
        for name in &template_params {
            let property = claim(name, "path", &mut taken);
            let declared_param = op
                .parameters
                .iter()
                .find(|p| p.location == ParameterLocation::Path && &p.name == name);
            let schema = match declared_param {
                Some(p) => parameter_schema(p.schema.as_ref(), p.kind, &p.description),
                None => json!({"type": "string"}),
            };
            properties.insert(property.clone(), schema);
            required.push(Value::String(property.clone()));
            arguments.push(Argument {
                property,
                location: ParameterLocation::Path,
                name: name.clone(),
            });
        }
        // (A declared path parameter is always in the template; validation sees to it.)
        for p in op
            .parameters
            .iter()
            .filter(|p| p.location != ParameterLocation::Path)
        {
            let location = match p.location {
                ParameterLocation::Query => "query",
                ParameterLocation::Header => "header",
                ParameterLocation::Path => "path",
            };
            let property = claim(&p.name, location, &mut taken);
            properties.insert(
                property.clone(),
                parameter_schema(p.schema.as_ref(), p.kind, &p.description),
            );
            if p.required {
                required.push(Value::String(property.clone()));
            }
            arguments.push(Argument {
                property,
                location: p.location,
                name: p.name.clone(),
            });
        }
        let subpath = template.as_ref().filter(|t| t.has_wildcard()).map(|_| {
            let property = claim("subpath", "path", &mut taken);
            properties.insert(
                property.clone(),
                json!({
                    "type": "string",
                    "description": "The rest of the path after the operation's prefix, segments separated by '/'."
                }),
            );
            property
        });
        let sends_body = op.request_schema.is_some()
            || matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let body = sends_body.then(|| {
            let property = claim("body", "request", &mut taken);
            let mut schema = op.request_schema.clone().unwrap_or(json!({}));
            if let Value::Object(o) = &mut schema {
                o.entry("description")
                    .or_insert_with(|| Value::String("The request body (JSON).".into()));
            }
            properties.insert(property.clone(), schema);
            property
        });
        // Schemas imported from OpenAPI keep shared types as `$defs`, referred to from their
        // own root; nested here, those definitions move to the input schema's root.
        let mut defs = Map::new();
        for schema in properties.values_mut() {
            hoist_defs(schema, &mut defs);
        }
        let mut input = Map::new();
        input.insert("type".into(), "object".into());
        input.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            input.insert("required".into(), Value::Array(required));
        }
        input.insert("additionalProperties".into(), Value::Bool(false));
        if !defs.is_empty() {
            input.insert("$defs".into(), Value::Object(defs));
        }

        let output_schema = op.response_schema.as_ref().map(|schema| {
            if is_object_schema(schema) {
                schema.clone()
            } else {
                let mut inner = schema.clone();
                let mut defs = Map::new();
                hoist_defs(&mut inner, &mut defs);
                let mut wrapped = json!({"type": "object", "properties": {"result": inner}, "required": ["result"]});
                if !defs.is_empty() {
                    wrapped["$defs"] = Value::Object(defs);
                }
                wrapped
            }
        });

        let description = exposure
            .description
            .clone()
            .or_else(|| (!op.description.is_empty()).then(|| op.description.clone()))
            .or_else(|| (!op.summary.is_empty()).then(|| op.summary.clone()))
            .unwrap_or_else(|| format!("{method} {}{}", collection.base_path, op.path));
        let title = (!op.summary.is_empty()).then(|| op.summary.clone());

        Tool {
            name,
            title,
            description,
            annotations: annotations(&method, &exposure),
            method,
            input_schema: Value::Object(input),
            wrap_output: op.response_schema.as_ref().map(|s| !is_object_schema(s)),
            output_schema,
            arguments,
            body,
            subpath,
            validator: OnceLock::new(),
        }
    }

    /// The tool as `tools/list` shows it.
    pub fn definition(&self) -> Value {
        let mut tool = Map::new();
        tool.insert("name".into(), self.name.clone().into());
        if let Some(title) = &self.title {
            tool.insert("title".into(), title.clone().into());
        }
        tool.insert("description".into(), self.description.clone().into());
        tool.insert("inputSchema".into(), self.input_schema.clone());
        if let Some(output) = &self.output_schema {
            tool.insert("outputSchema".into(), output.clone());
        }
        let mut annotations = self.annotations.clone();
        if let Some(title) = &self.title {
            annotations.insert("title".into(), title.clone().into());
        }
        tool.insert("annotations".into(), Value::Object(annotations));
        Value::Object(tool)
    }

    /// The structured content for the upstream's JSON: as the output schema says (wrapped as
    /// `{"result": …}` unless the schema's root is an object), and without a schema wrapped
    /// unless it is an object. An upstream that answers a non-object where its schema promised
    /// an object is wrapped too: structured content is always an object.
    pub fn structured(&self, value: Value) -> Value {
        if self.wrap_output.unwrap_or(!value.is_object()) || !value.is_object() {
            json!({ "result": value })
        } else {
            value
        }
    }

    /// Checks `arguments` against the input schema and builds the request they describe.
    pub fn request(&self, arguments: &Value) -> Result<Built, ArgumentError> {
        let validator = self.validator.get_or_init(|| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&self.input_schema)
                .map_err(|e| e.to_string())
        });
        let validator = validator
            .as_ref()
            .map_err(|e| ArgumentError(format!("this tool's input schema is unusable: {e}")))?;
        let problems: Vec<String> = validator
            .iter_errors(arguments)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(ArgumentError(format!(
                "invalid arguments: {}",
                problems.join("; ")
            )));
        }
        let args = arguments.as_object().cloned().unwrap_or_default();
        let mut built = Built {
            path_params: HashMap::new(),
            rest: String::new(),
            query: None,
            headers: Vec::new(),
            body: None,
        };
        let mut query: Vec<(String, String)> = Vec::new();
        for arg in &self.arguments {
            let Some(value) = args.get(&arg.property).filter(|v| !v.is_null()) else {
                continue;
            };
            match arg.location {
                ParameterLocation::Path => {
                    let text = scalar_or_list(value, &arg.property)?;
                    if text.is_empty() || text == "." || text == ".." || text.contains(['/', '\\'])
                    {
                        return Err(ArgumentError(format!(
                            "'{}' must be one path segment: not empty, '.' or '..', and without '/' or '\\'",
                            arg.property
                        )));
                    }
                    built.path_params.insert(arg.name.clone(), text);
                }
                ParameterLocation::Query => match value {
                    Value::Array(items) => {
                        for item in items {
                            query.push((arg.name.clone(), scalar(item, &arg.property)?));
                        }
                    }
                    other @ (Value::Null
                    | Value::Bool(_)
                    | Value::Number(_)
                    | Value::String(_)
                    | Value::Object(_)) => {
                        query.push((arg.name.clone(), scalar(other, &arg.property)?))
                    }
                },
                ParameterLocation::Header => {
                    let text = scalar_or_list(value, &arg.property)?;
                    let name = http::HeaderName::from_bytes(arg.name.as_bytes())
                        .map_err(|_| ArgumentError(format!("'{}' is not a header", arg.name)))?;
                    let value = http::HeaderValue::from_str(&text).map_err(|_| {
                        ArgumentError(format!(
                            "'{}' cannot be sent as a header value (it contains control characters)",
                            arg.property
                        ))
                    })?;
                    built.headers.push((name, value));
                }
            }
        }
        if !query.is_empty() {
            built.query = Some(encode_query(&query));
        }
        if let Some(property) = &self.subpath {
            let rest = args.get(property).and_then(Value::as_str).unwrap_or("");
            if rest
                .split('/')
                .any(|segment| segment == "." || segment == ".." || segment.contains('\\'))
            {
                return Err(ArgumentError(format!(
                    "'{property}' may not contain '.' or '..' segments or '\\'"
                )));
            }
            built.rest = rest.trim_start_matches('/').to_owned();
        }
        if let Some(property) = &self.body
            && let Some(body) = args.get(property)
        {
            built.body = Some(serde_json::to_vec(body).expect("a JSON value serialises"));
        }
        Ok(built)
    }
}

/// `application/x-www-form-urlencoded` pairs as a query string.
fn encode_query(pairs: &[(String, String)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const QUERY: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A parameter value as text: strings as they are, numbers and booleans as JSON writes them.
fn scalar(value: &Value, property: &str) -> Result<String, ArgumentError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => Err(ArgumentError(format!(
            "'{property}' must be a string, number or boolean"
        ))),
    }
}

/// A scalar, or a list of scalars joined by commas (OpenAPI's `simple` style).
fn scalar_or_list(value: &Value, property: &str) -> Result<String, ArgumentError> {
    match value {
        Value::Array(items) => Ok(items
            .iter()
            .map(|i| scalar(i, property))
            .collect::<Result<Vec<_>, _>>()?
            .join(",")),
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Object(_)) => scalar(other, property),
    }
}

fn parameter_schema(schema: Option<&Value>, kind: ParameterType, description: &str) -> Value {
    let mut schema = schema.cloned().unwrap_or_else(|| {
        let kind = match kind {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Number => "number",
            ParameterType::Boolean => "boolean",
        };
        json!({ "type": kind })
    });
    if let Value::Object(o) = &mut schema
        && !description.is_empty()
    {
        o.entry("description")
            .or_insert_with(|| Value::String(description.to_owned()));
    }
    schema
}

/// Moves `schema`'s own `$defs` into `defs` (the enclosing schema's root).
fn hoist_defs(schema: &mut Value, defs: &mut Map<String, Value>) {
    if let Some(Value::Object(own)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        defs.extend(own);
    }
}

fn is_object_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

/// Defaults from the method, each overridable by the operation's `mcp` block: a `GET` only
/// reads; a `DELETE` destroys (and repeating it changes nothing more); `PUT` replaces.
fn annotations(method: &Method, exposure: &crate::model::McpExposure) -> Map<String, Value> {
    let (read_only, destructive, idempotent) = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => (true, false, true),
        Method::DELETE => (false, true, true),
        Method::PUT => (false, true, true),
        _ => (false, false, false),
    };
    let mut out = Map::new();
    out.insert(
        "readOnlyHint".into(),
        exposure.read_only.unwrap_or(read_only).into(),
    );
    let read_only = exposure.read_only.unwrap_or(read_only);
    if !read_only {
        out.insert(
            "destructiveHint".into(),
            exposure.destructive.unwrap_or(destructive).into(),
        );
    }
    out.insert(
        "idempotentHint".into(),
        exposure.idempotent.unwrap_or(idempotent).into(),
    );
    if let Some(open_world) = exposure.open_world {
        out.insert("openWorldHint".into(), open_world.into());
    }
    out
}

/// Whether an operation of `collection` is offered to agents.
pub fn exposed(collection: &Collection, op: &Operation) -> bool {
    match &op.mcp {
        Some(exposure) => exposure.enabled,
        None => collection.mcp.as_ref().is_some_and(|m| m.expose_all),
    }
}

/// Gives every exposed operation a tool name, unique across the snapshot and stable for the
/// same configuration: the operation's `mcp.tool_name`, else its id made safe. A derived name
/// that two operations (or a discovery tool) would share is qualified by its collection
/// (`payments_get-charge`); what still collides gets a numeric suffix, in a fixed order.
/// `wanted` holds `(collection id, operation id, explicit tool name)`; the result is in the
/// same order.
pub fn assign_names(wanted: &[(&str, &str, Option<&str>)]) -> Vec<String> {
    let mut taken: HashSet<String> = DISCOVERY_TOOLS.iter().map(|s| s.to_string()).collect();
    let mut names = vec![String::new(); wanted.len()];
    // Explicit names first: they were chosen (validation refuses duplicates).
    for (i, (_, _, explicit)) in wanted.iter().enumerate() {
        if let Some(name) = explicit
            && taken.insert(name.to_string())
        {
            names[i] = name.to_string();
        }
    }
    let mut derived_count: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (_, op, _)) in wanted.iter().enumerate() {
        if names[i].is_empty() {
            *derived_count.entry(safe_name(op)).or_default() += 1;
        }
    }
    let mut order: Vec<usize> = (0..wanted.len()).filter(|&i| names[i].is_empty()).collect();
    order.sort_by_key(|&i| (wanted[i].0, wanted[i].1));
    for i in order {
        let (collection, op, _) = wanted[i];
        let plain = safe_name(op);
        let mut name = if derived_count[&plain] == 1 && !taken.contains(&plain) {
            plain
        } else {
            safe_name(&format!("{collection}_{op}"))
        };
        if taken.contains(&name) {
            let base: String = name.chars().take(MAX_NAME - 4).collect();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
        }
        taken.insert(name.clone());
        names[i] = name;
    }
    names
}

/// `text` within the specification's tool-name rules: letters, digits, `_`, `-`, `.`; at most
/// 128 characters.
fn safe_name(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection(yaml: &str) -> Collection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const PETS: &str = r#"
id: pets
base_path: /pets
upstreams: { sandbox: "http://127.0.0.1:1" }
operations:
  - id: get-pet
    methods: [GET, HEAD]
    path: /{id}
    summary: Find a pet
    parameters:
      - { name: id, in: path, type: integer, description: The pet's id }
      - { name: id, in: query }
      - { name: fields, in: query, schema: { type: array, items: { type: string } } }
      - { name: X-Trace, in: header }
    response_schema: { type: object, properties: { id: { type: integer } } }
  - id: add-pet
    methods: [POST]
    path: /
    request_schema: { type: object, required: [name], properties: { name: { type: string } } }
    response_schema: { type: array }
  - id: drop-pet
    methods: [DELETE]
    path: /{id}
    mcp: { destructive: false }
  - id: files
    methods: [GET]
    path: /files/*
"#;

    #[test]
    fn parameters_of_different_locations_never_merge() {
        let c = collection(PETS);
        let tool = Tool::compile("get-pet".into(), &c, &c.operations[0]);
        assert_eq!(tool.method, Method::GET);
        let props = tool.input_schema["properties"].as_object().unwrap();
        let names: Vec<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(names, ["X-Trace", "fields", "id", "query_id"]);
        assert_eq!(props["id"]["type"], "integer");
        assert_eq!(props["id"]["description"], "The pet's id");
        assert_eq!(tool.input_schema["required"], json!(["id"]));
        assert_eq!(tool.input_schema["additionalProperties"], false);
        assert_eq!(tool.annotations["readOnlyHint"], true);
        assert_eq!(tool.definition()["title"], "Find a pet");

        let built = tool
            .request(&json!({"id": 7, "query_id": "a b", "fields": ["x", "y&z"], "X-Trace": "t"}))
            .unwrap();
        assert_eq!(built.path_params["id"], "7");
        assert_eq!(
            built.query.as_deref(),
            Some("id=a%20b&fields=x&fields=y%26z")
        );
        assert_eq!(built.headers[0].0, "x-trace");
        assert_eq!(built.body, None);
    }

    #[test]
    fn arguments_are_validated_and_cannot_change_the_path() {
        let c = collection(PETS);
        let tool = Tool::compile("get-pet".into(), &c, &c.operations[0]);
        let err = tool.request(&json!({})).unwrap_err();
        assert!(err.0.contains("\"id\" is a required property"), "{err}");
        let err = tool.request(&json!({"id": "7"})).unwrap_err();
        assert!(err.0.contains("/id"), "{err}");
        let err = tool.request(&json!({"id": 7, "extra": 1})).unwrap_err();
        assert!(err.0.contains("extra"), "{err}");

        let drop = Tool::compile("drop-pet".into(), &c, &c.operations[2]);
        for hostile in ["../x", "a/b", "..", ".", "", "a\\b"] {
            let err = drop.request(&json!({ "id": hostile })).unwrap_err();
            assert!(err.0.contains("one path segment"), "{hostile}: {err}");
        }
        // Encoding is the template's job: the value stays one segment.
        assert_eq!(
            drop.request(&json!({"id": "a?b#c"})).unwrap().path_params["id"],
            "a?b#c"
        );
        let files = Tool::compile("files".into(), &c, &c.operations[3]);
        assert!(files.request(&json!({"subpath": "a/../b"})).is_err());
        assert_eq!(
            files.request(&json!({"subpath": "/a/b"})).unwrap().rest,
            "a/b"
        );
    }

    #[test]
    fn bodies_and_output_schemas() {
        let c = collection(PETS);
        let add = Tool::compile("add-pet".into(), &c, &c.operations[1]);
        assert_eq!(add.body.as_deref(), Some("body"));
        assert_eq!(add.annotations["readOnlyHint"], false);
        assert_eq!(add.annotations["destructiveHint"], false);
        assert!(add.request(&json!({"body": {}})).is_err());
        let built = add.request(&json!({"body": {"name": "Rex"}})).unwrap();
        assert_eq!(built.body.unwrap(), br#"{"name":"Rex"}"#);
        // An array response is wrapped: structured content is always an object.
        assert_eq!(
            add.output_schema.clone().unwrap(),
            json!({"type": "object", "properties": {"result": {"type": "array"}}, "required": ["result"]})
        );
        // Structured content follows the output schema, whatever the value's shape.
        assert_eq!(add.structured(json!([1])), json!({"result": [1]}));
        assert_eq!(add.structured(json!({"a": 1})), json!({"result": {"a": 1}}));
        let get = Tool::compile("get-pet".into(), &c, &c.operations[0]);
        assert_eq!(get.structured(json!({"id": 1})), json!({"id": 1}));
        assert_eq!(get.structured(json!("odd")), json!({"result": "odd"}));
        let drop = Tool::compile("drop-pet".into(), &c, &c.operations[2]);
        assert_eq!(drop.structured(json!([])), json!({"result": []}));
        assert_eq!(drop.structured(json!({})), json!({}));
        assert_eq!(drop.annotations["destructiveHint"], false, "overridden");
        assert_eq!(drop.annotations["idempotentHint"], true);
        assert!(drop.output_schema.is_none());
    }

    #[test]
    fn names_are_unique_stable_and_within_the_rules() {
        let wanted = [
            ("b", "list", None),
            ("a", "list", None),
            ("a", "get thing/x", None),
            ("c", "search", Some("list_endpoints_custom")),
            ("d", "list_endpoints", None),
            ("e", "x", Some("a_list")),
        ];
        let names = assign_names(&wanted);
        assert_eq!(
            names,
            [
                "b_list",
                "a_list_2",
                "get_thing_x",
                "list_endpoints_custom",
                "d_list_endpoints",
                "a_list"
            ]
        );
        assert_eq!(assign_names(&wanted), names, "stable");
        let long = "x".repeat(300);
        let names = assign_names(&[("c", &long, None)]);
        assert_eq!(names[0].len(), 128);
    }
}
