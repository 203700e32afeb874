//! OpenAPI import: a collection's operations from an OpenAPI 3.0 or 3.1 document (JSON or
//! YAML). Local `$ref`s are resolved — component schemas become `$defs` of the schemas that use
//! them, so recursive types survive — and OpenAPI 3.0's schema dialect is converted to JSON
//! Schema 2020-12. What cannot be imported faithfully (external references, cookie
//! parameters, non-JSON bodies, partial-segment path parameters) is reported, never guessed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value, json};

use crate::model::{
    Collection, McpExposure, Operation, OperationId, Parameter, ParameterLocation, ParameterType,
    Status,
};
use crate::route::template::PathTemplate;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What a document yielded.
#[derive(Debug)]
pub struct Imported {
    pub title: String,
    pub version: String,
    pub description: String,
    pub operations: Vec<Operation>,
    /// What was skipped or imported with less than the document says, one line each, naming
    /// where in the document.
    pub notes: Vec<String>,
}

/// Why a document cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the document is neither JSON nor YAML: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Reads an OpenAPI document.
pub fn import(text: &str) -> Result<Imported, ImportError> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            serde_saphyr::from_str(text).map_err(|e| ImportError::Unreadable(e.to_string()))?
        }
    };
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    let v30 = version.starts_with("3.0");
    if !(v30 || version.starts_with("3.1")) {
        return Err(ImportError::Unsupported(if doc.get("swagger").is_some() {
            "Swagger 2.0 documents are not supported: convert to OpenAPI 3 first".into()
        } else {
            format!("'openapi: {version}' is not supported: OpenAPI 3.0 and 3.1 are")
        }));
    }
    let info = doc.get("info").cloned().unwrap_or_default();
    let text_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut out = Imported {
        title: text_of(&info, "title"),
        version: text_of(&info, "version"),
        description: text_of(&info, "description"),
        operations: Vec::new(),
        notes: Vec::new(),
    };
    let resolver = Resolver { doc: &doc, v30 };
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        out.notes.push("the document has no paths".into());
        return Ok(out);
    };
    let mut ids = HashSet::new();
    for (path, item) in paths {
        let item = match resolver.follow(item) {
            Ok(item) => item,
            Err(e) => {
                out.notes.push(format!("paths.{path}: {e}; skipped"));
                continue;
            }
        };
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = format!("paths.{path}.{method}");
            match resolver.operation(path, method, &item, op, &mut out.notes, &at) {
                Ok(mut operation) => {
                    // Operation ids are unique within the collection.
                    let base = operation.id.0.clone();
                    let mut n = 2;
                    while !ids.insert(operation.id.0.clone()) {
                        operation.id = OperationId(format!("{base}-{n}"));
                        n += 1;
                    }
                    if operation.id.0 != base {
                        out.notes.push(format!(
                            "{at}: operation id '{base}' is taken; imported as '{}'",
                            operation.id
                        ));
                    }
                    out.operations.push(operation);
                }
                Err(e) => out.notes.push(format!("{at}: {e}; skipped")),
            }
        }
    }
    Ok(out)
}

/// The stored collection with its operations replaced by the imported ones. Settings the
/// document does not carry are kept: the collection's, and an existing operation's target
/// path, body capture and MCP exposure (unless the document sets `x-portcullis-mcp`).
pub fn merge_into(mut collection: Collection, imported: &Imported) -> Collection {
    let old: BTreeMap<OperationId, Operation> = collection
        .operations
        .drain(..)
        .map(|o| (o.id.clone(), o))
        .collect();
    for op in &imported.operations {
        let mut op = op.clone();
        if let Some(previous) = old.get(&op.id) {
            op.target_path = op.target_path.or(previous.target_path.clone());
            op.capture_body = op.capture_body.or(previous.capture_body.clone());
            op.mcp = op.mcp.or(previous.mcp.clone());
            // A document without x-portcullis-scopes never lifts scopes set by hand.
            if op.scopes.is_empty() {
                op.scopes = previous.scopes.clone();
            }
            op.status = previous.status;
        }
        collection.operations.push(op);
    }
    if collection.description.is_empty() {
        collection.description = imported.description.clone();
    }
    collection
}

/// Where an imported collection lives, for a collection the store does not have yet.
#[derive(Clone, Debug, Default)]
pub struct NewCollection {
    pub base_path: Option<String>,
    /// Upstream URL per environment.
    pub upstreams: BTreeMap<crate::model::Environment, String>,
}

/// What an import did to the store.
#[derive(Debug)]
pub struct ImportReport {
    pub applied: crate::plan::Applied,
    pub notes: Vec<String>,
}

/// Why an import changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyImportError {
    #[error(transparent)]
    Document(#[from] ImportError),
    #[error("collection '{0}' does not exist yet: give its base path and at least one upstream")]
    NewCollectionIncomplete(crate::model::CollectionId),
    #[error(transparent)]
    Apply(#[from] crate::plan::ApplyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Imports a document into collection `id` of the store: creates the collection (with
/// `new`'s base path and upstreams) or replaces its operations, validated and committed as one
/// configuration version through the same path as `apply`. `expose_all` offers every
/// operation to agents (the collection's `mcp.expose_all`).
pub async fn import_into_store(
    store: &crate::store::Store,
    id: &crate::model::CollectionId,
    document: &str,
    new: &NewCollection,
    expose_all: bool,
    dry_run: bool,
) -> Result<ImportReport, ApplyImportError> {
    let imported = import(document)?;
    let (_, records) = store.load().await?;
    let current = crate::store::assemble(&records)?;
    let collection = match current.collections.into_iter().find(|c| &c.id == id) {
        Some(existing) => existing,
        None => {
            let (Some(base_path), false) = (&new.base_path, new.upstreams.is_empty()) else {
                return Err(ApplyImportError::NewCollectionIncomplete(id.clone()));
            };
            Collection {
                id: id.clone(),
                base_path: base_path.clone(),
                description: String::new(),
                version: if imported.version.is_empty() {
                    "1".into()
                } else {
                    imported.version.clone()
                },
                status: Status::Published,
                upstreams: new.upstreams.clone(),
                headers: BTreeMap::new(),
                upstream_timeout: None,
                upstream_auth: None,
                identity_assertion: false,
                quota_policy: None,
                mcp: None,
                operations: Vec::new(),
            }
        }
    };
    let mut collection = merge_into(collection, &imported);
    if expose_all {
        collection
            .mcp
            .get_or_insert_with(Default::default)
            .expose_all = true;
    }
    let file = crate::model::Config {
        collections: vec![collection],
        ..Default::default()
    };
    let applied = crate::plan::apply(
        store,
        &file,
        crate::plan::ApplyOptions {
            prune: false,
            dry_run,
        },
    )
    .await?;
    Ok(ImportReport {
        applied,
        notes: imported.notes,
    })
}

struct Resolver<'d> {
    doc: &'d Value,
    /// OpenAPI 3.0's schema dialect (converted to 2020-12).
    v30: bool,
}

impl Resolver<'_> {
    /// `value`, or what its `$ref` points to (following chains), for non-schema objects.
    fn follow(&self, value: &Value) -> Result<Value, String> {
        let mut value = value.clone();
        for _ in 0..16 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok(value);
            };
            value = self.lookup(reference)?.clone();
        }
        Err("a $ref chain is too long or circular".into())
    }

    fn lookup(&self, reference: &str) -> Result<&Value, String> {
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(format!(
                "external reference '{reference}' is not supported (only '#/…' references within the document)"
            ));
        };
        let decoded = percent_encoding::percent_decode_str(pointer)
            .decode_utf8()
            .map_err(|_| format!("reference '{reference}' is not valid UTF-8"))?;
        self.doc
            .pointer(&decoded)
            .ok_or_else(|| format!("reference '{reference}' points to nothing"))
    }

    fn operation(
        &self,
        path: &str,
        method: &str,
        item: &Value,
        op: &Value,
        notes: &mut Vec<String>,
        at: &str,
    ) -> Result<Operation, String> {
        // Path parameter names such as `{enterprise-team}` become `{enterprise_team}`: a path
        // parameter's name never travels, so the rename changes nothing on the wire.
        let (template_text, renamed) = rename_path_params(path);
        let template = PathTemplate::parse(&template_text)
            .map_err(|e| format!("the path cannot be a Portcullis template ({e})"))?;
        let id = op
            .get("operationId")
            .and_then(Value::as_str)
            .map(safe_id)
            .unwrap_or_else(|| derived_id(method, path));
        let text = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("").to_owned();

        // Path-level parameters, overridden by the operation's own (same name and location).
        let mut parameters: Vec<Parameter> = Vec::new();
        let declared = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(
                op.get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            );
        for (i, raw) in declared.enumerate() {
            let raw = self.follow(raw)?;
            let Some(mut p) = self.parameter(&raw, notes, &format!("{at}.parameters[{i}]"))? else {
                continue;
            };
            if p.location == ParameterLocation::Path
                && let Some((_, new)) = renamed.iter().find(|(old, _)| *old == p.name)
            {
                p.name = new.clone();
            }
            parameters.retain(|q| !(q.name == p.name && q.location == p.location));
            parameters.push(p);
        }
        for name in template.params() {
            if !parameters
                .iter()
                .any(|p| p.location == ParameterLocation::Path && p.name == name)
            {
                notes.push(format!(
                    "{at}: path parameter '{name}' is not declared; imported as a string"
                ));
            }
        }
        parameters.retain(|p| {
            p.location != ParameterLocation::Path || template.params().any(|n| n == p.name)
        });

        let request_schema = match op.get("requestBody") {
            None => None,
            Some(body) => {
                let body = self.follow(body)?;
                match json_media(&body) {
                    Some(schema) => Some(self.schema(schema)?),
                    None => {
                        let types: Vec<&String> = body
                            .get("content")
                            .and_then(Value::as_object)
                            .map(|c| c.keys().collect())
                            .unwrap_or_default();
                        notes.push(format!(
                            "{at}.requestBody: only JSON bodies are described to agents; {types:?} imported without a schema"
                        ));
                        None
                    }
                }
            }
        };
        let response_schema = self.response_schema(op)?;

        let scopes = match op.get("x-portcullis-scopes") {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| "x-portcullis-scopes must be a list of strings".to_owned())?,
        };
        let mcp = match op.get("x-portcullis-mcp") {
            None => None,
            Some(Value::Bool(enabled)) => Some(McpExposure {
                enabled: *enabled,
                ..Default::default()
            }),
            Some(v) => Some(
                serde_json::from_value(v.clone()).map_err(|e| format!("x-portcullis-mcp: {e}"))?,
            ),
        };
        let status = if op.get("deprecated") == Some(&Value::Bool(true)) {
            notes.push(format!(
                "{at}: deprecated; imported as a draft (not routed)"
            ));
            Status::Draft
        } else {
            Status::Published
        };
        Ok(Operation {
            id: OperationId(id),
            methods: vec![method.to_ascii_uppercase()],
            path: template_text,
            target_path: None,
            summary: text("summary"),
            description: text("description"),
            parameters,
            request_schema,
            response_schema,
            scopes,
            status,
            mcp,
            capture_body: None,
        })
    }

    fn parameter(
        &self,
        raw: &Value,
        notes: &mut Vec<String>,
        at: &str,
    ) -> Result<Option<Parameter>, String> {
        let name = raw
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a parameter without a name")?;
        let required = raw.get("required") == Some(&Value::Bool(true));
        let location = match raw.get("in").and_then(Value::as_str) {
            Some("path") => ParameterLocation::Path,
            Some("query") => ParameterLocation::Query,
            Some("header") => {
                // OpenAPI ignores Accept, Content-Type and Authorization parameters; the
                // gateway sets those and others itself.
                let owned = http::HeaderName::from_bytes(name.as_bytes())
                    .map_or(true, |h| crate::config::gateway_owned_parameter(&h));
                if owned {
                    if !["accept", "content-type", "authorization"]
                        .contains(&name.to_ascii_lowercase().as_str())
                    {
                        notes.push(format!(
                            "{at}: header parameter '{name}' is set by the gateway; left out"
                        ));
                    }
                    return Ok(None);
                }
                ParameterLocation::Header
            }
            other => {
                let what = format!(
                    "parameter '{name}' in '{}' is not supported",
                    other.unwrap_or("(missing)")
                );
                if required {
                    return Err(format!("{what} and it is required"));
                }
                notes.push(format!("{at}: {what}; left out"));
                return Ok(None);
            }
        };
        if raw.get("content").is_some() {
            return Err(format!(
                "parameter '{name}' is described by 'content', which is not supported"
            ));
        }
        let style = raw.get("style").and_then(Value::as_str);
        let default_style = match location {
            ParameterLocation::Query => "form",
            ParameterLocation::Path | ParameterLocation::Header => "simple",
        };
        if style.is_some_and(|s| s != default_style)
            || raw.get("explode") == Some(&Value::Bool(location != ParameterLocation::Query))
        {
            notes.push(format!(
                "{at}: parameter '{name}' uses a non-default style; it is sent as '{default_style}'"
            ));
        }
        let schema = match raw.get("schema") {
            Some(s) => self.schema(s)?,
            None => json!({"type": "string"}),
        };
        let kind = match schema.get("type").and_then(Value::as_str) {
            Some("integer") => ParameterType::Integer,
            Some("number") => ParameterType::Number,
            Some("boolean") => ParameterType::Boolean,
            _ => ParameterType::String,
        };
        if schema.get("type").and_then(Value::as_str) == Some("object") {
            return Err(format!(
                "parameter '{name}' is an object, which is not supported"
            ));
        }
        // The plain type says it all for simple schemas; anything richer is kept whole.
        let simple = schema.as_object().is_some_and(|o| {
            o.get("type").is_some_and(Value::is_string)
                && o.keys().all(|k| k == "type" || k == "description")
        });
        Ok(Some(Parameter {
            name: name.to_owned(),
            location,
            kind,
            required: required || location == ParameterLocation::Path,
            description: raw
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_owned(),
            schema: (!simple).then_some(schema),
        }))
    }

    /// The JSON schema of the first success response (`200`…`299`, then `2XX`).
    fn response_schema(&self, op: &Value) -> Result<Option<Value>, String> {
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            return Ok(None);
        };
        let mut codes: Vec<&String> = responses
            .keys()
            .filter(|k| k.starts_with('2') && k.len() == 3)
            .collect();
        codes.sort_by_key(|k| (k.as_str() == "2XX", k.to_string()));
        for code in codes {
            let response = self.follow(&responses[code.as_str()])?;
            if let Some(schema) = json_media(&response) {
                return self.schema(schema).map(Some);
            }
        }
        Ok(None)
    }

    /// A schema in JSON Schema 2020-12, with the component schemas it uses as `$defs`.
    fn schema(&self, schema: &Value) -> Result<Value, String> {
        let mut defs = BTreeMap::new();
        let mut pending = BTreeSet::new();
        let mut root = self.convert(schema, &mut pending, 0)?;
        while let Some(name) = pending.pop_first() {
            if defs.contains_key(&name) {
                continue;
            }
            let target = self.lookup(&format!("#/components/schemas/{name}"))?;
            let converted = self.convert(target, &mut pending, 0)?;
            defs.insert(name, converted);
        }
        if !defs.is_empty()
            && let Value::Object(o) = &mut root
        {
            o.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
        }
        Ok(root)
    }

    /// Converts one schema: `#/components/schemas/X` references become `#/$defs/X` (noted in
    /// `pending`); OpenAPI 3.0's `nullable`, boolean exclusive bounds and `example` become
    /// their 2020-12 forms; documentation-only keywords are dropped.
    fn convert(
        &self,
        schema: &Value,
        pending: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<Value, String> {
        let Value::Object(map) = schema else {
            return Ok(schema.clone());
        };
        // Inlined references could loop; component schemas cannot (they become $defs).
        if depth > 64 {
            return Err("a schema nests too deeply, or its references are circular".into());
        }
        let depth = depth + 1;
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            if let Some(name) = reference.strip_prefix("#/components/schemas/")
                && !name.contains('/')
            {
                let name = name.replace("~1", "/").replace("~0", "~");
                pending.insert(name.clone());
                return Ok(
                    json!({ "$ref": format!("#/$defs/{}", name.replace('~', "~0").replace('/', "~1")) }),
                );
            }
            // Any other local reference is inlined.
            let target = self.lookup(reference)?.clone();
            return self.convert(&target, pending, depth);
        }
        let mut out = Map::new();
        for (key, value) in map {
            match key.as_str() {
                "discriminator" | "xml" | "externalDocs" => {}
                "nullable" if self.v30 => {}
                "example" if self.v30 => {
                    out.insert("examples".into(), json!([value]));
                }
                "exclusiveMinimum" | "exclusiveMaximum" if value.is_boolean() => {}
                "properties" | "patternProperties" | "$defs" | "definitions" => {
                    let mut props = Map::new();
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        props.insert(name.clone(), self.convert(sub, pending, depth)?);
                    }
                    out.insert(key.clone(), Value::Object(props));
                }
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "unevaluatedProperties"
                | "unevaluatedItems" => {
                    out.insert(key.clone(), self.convert(value, pending, depth)?);
                }
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    let items = value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| self.convert(s, pending, depth))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.insert(key.clone(), Value::Array(items));
                }
                _ if key.starts_with("x-") => {}
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        if self.v30 {
            // Boolean exclusive bounds qualify `minimum`/`maximum`.
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if map.get(flag) == Some(&Value::Bool(true))
                    && let Some(limit) = out.remove(bound)
                {
                    out.insert(flag.into(), limit);
                }
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(&mut out));
                        out.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// `path` with every `{param}` whose name a template does not accept renamed (characters other
/// than letters, digits and `_` replaced by `_`), and the renames made.
fn rename_path_params(path: &str) -> (String, Vec<(String, String)>) {
    let mut renamed = Vec::new();
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            let Some(name) = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| !n.contains(['{', '}']))
            else {
                return segment.to_owned();
            };
            let mut safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if safe.starts_with(|c: char| c.is_ascii_digit()) || safe.is_empty() {
                safe.insert(0, 'p');
            }
            if safe != name {
                renamed.push((name.to_owned(), safe.clone()));
            }
            format!("{{{safe}}}")
        })
        .collect();
    (segments.join("/"), renamed)
}

/// The schema of a body's JSON media type (`application/json` or `…+json`), if it has one.
fn json_media(body: &Value) -> Option<&Value> {
    let content = body.get("content")?.as_object()?;
    content
        .iter()
        .find(|(media, _)| {
            let media = media.split(';').next().unwrap_or("").trim();
            media == "application/json" || media.ends_with("+json")
        })
        .map(|(_, m)| m.get("schema").unwrap_or(&Value::Bool(true)))
}

/// An operationId within Portcullis's identifier rules.
fn safe_id(text: &str) -> String {
    let mut id: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        id.insert(0, 'x');
        id.truncate(128);
    }
    id
}

/// An id for an operation without `operationId`: its method and path (`get_pets_id`).
fn derived_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(['/', '{', '}', '.', '-'])
        .filter(|w| !w.is_empty())
        .collect();
    safe_id(&format!("{method}_{}", words.join("_")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETSTORE: &str = include_str!("../tests/fixtures/openapi/petstore-expanded.yaml");

    #[test]
    fn imports_the_petstore() {
        let imported = import(PETSTORE).unwrap();
        assert_eq!(imported.title, "Swagger Petstore");
        let ids: Vec<&str> = imported.operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "findPets",
                "addPet",
                "find pet by id".replace(' ', "_").as_str(),
                "deletePet"
            ]
        );
        let find = &imported.operations[0];
        assert_eq!(find.methods, ["GET"]);
        assert_eq!(find.parameters.len(), 2);
        assert_eq!(
            find.parameters[0].schema,
            Some(json!({"type": "array", "items": {"type": "string"}}))
        );
        assert_eq!(find.parameters[1].kind, ParameterType::Integer);
        let response = find.response_schema.as_ref().unwrap();
        assert_eq!(response["items"], json!({"$ref": "#/$defs/Pet"}));
        assert!(response["$defs"]["Pet"]["allOf"][0]["$ref"] == "#/$defs/NewPet");
        assert!(response["$defs"]["NewPet"]["required"] == json!(["name"]));
        let add = &imported.operations[1];
        assert_eq!(
            add.request_schema.as_ref().unwrap()["$ref"],
            "#/$defs/NewPet"
        );
        let by_id = &imported.operations[2];
        assert_eq!(by_id.path, "/pets/{id}");
        assert!(by_id.parameters[0].required);
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    }

    #[test]
    fn converts_openapi_3_0_schemas() {
        let doc = r##"
openapi: 3.0.3
info: { title: t, version: "1" }
paths:
  /things/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: string, nullable: true } }
    get:
      parameters:
        - { name: session, in: cookie, schema: { type: string } }
        - { name: Accept, in: header, schema: { type: string } }
        - { name: count, in: query, schema: { type: integer, minimum: 0, exclusiveMinimum: true, example: 3 } }
      responses:
        "201": { description: ok, content: { application/json: { schema: { $ref: "#/components/schemas/Node" } } } }
        "200": { description: ok, content: { application/problem+json: { schema: { type: string } } } }
  /files/{name}.json:
    get: { responses: {} }
  /ext:
    post:
      requestBody: { content: { application/json: { schema: { $ref: "other.yaml#/Thing" } } } }
      responses: {}
  /form:
    post:
      x-portcullis-scopes: [write]
      x-portcullis-mcp: { tool_name: submit_form, destructive: false }
      requestBody: { content: { application/x-www-form-urlencoded: { schema: { type: object } } } }
      responses: {}
components:
  schemas:
    Node:
      type: object
      x-internal: true
      properties:
        next: { $ref: "#/components/schemas/Node" }
"##;
        let imported = import(doc).unwrap();
        let ids: Vec<&str> = imported.operations.iter().map(|o| o.id.as_str()).collect();
        // Paths in document key order (sorted).
        assert_eq!(ids, ["post_form", "get_things_id"], "{:?}", imported.notes);
        let things = &imported.operations[1];
        assert_eq!(
            things.parameters[0].schema,
            Some(json!({"type": ["string", "null"]}))
        );
        assert_eq!(
            things.parameters[1].schema,
            Some(json!({"type": "integer", "exclusiveMinimum": 0, "examples": [3]}))
        );
        assert_eq!(things.parameters.len(), 2, "cookie and Accept left out");
        // 200 before 201; a +json media type counts as JSON.
        assert_eq!(things.response_schema, Some(json!({"type": "string"})));
        assert_eq!(
            rename_path_params("/teams/{enterprise-team}/{org}/{1st}"),
            (
                "/teams/{enterprise_team}/{org}/{p1st}".to_owned(),
                vec![
                    ("enterprise-team".to_owned(), "enterprise_team".to_owned()),
                    ("1st".to_owned(), "p1st".to_owned())
                ]
            )
        );
        let form = &imported.operations[0];
        assert_eq!(form.scopes, ["write"]);
        assert_eq!(
            form.mcp.as_ref().unwrap().tool_name.as_deref(),
            Some("submit_form")
        );
        assert!(form.request_schema.is_none());
        let notes = imported.notes.join("\n");
        assert!(notes.contains("paths./things/{id}.get.parameters[1]: parameter 'session' in 'cookie' is not supported; left out"), "{notes}");
        assert!(
            notes
                .contains("paths./files/{name}.json.get: the path cannot be a Portcullis template"),
            "{notes}"
        );
        assert!(
            notes.contains(
                "paths./ext.post: external reference 'other.yaml#/Thing' is not supported"
            ),
            "{notes}"
        );
        assert!(
            notes.contains("paths./form.post.requestBody: only JSON bodies"),
            "{notes}"
        );

        // A recursive type is kept as $defs.
        let doc2 = doc.replace("\"200\": { description: ok, content: { application/problem+json: { schema: { type: string } } } }", "");
        let node = import(&doc2).unwrap().operations[1]
            .response_schema
            .clone()
            .unwrap();
        assert_eq!(node["$ref"], "#/$defs/Node");
        assert_eq!(
            node["$defs"]["Node"]["properties"]["next"]["$ref"],
            "#/$defs/Node"
        );
        assert!(node["$defs"]["Node"].get("x-internal").is_none());
    }

    #[test]
    fn reimport_keeps_what_the_document_does_not_say() {
        let imported = import(PETSTORE).unwrap();
        let mut stored: Collection = serde_saphyr::from_str(
            "id: pets\nbase_path: /pets\nupstreams: { sandbox: 'http://x' }\noperations:\n  - { id: findPets, methods: [GET], path: /pets, scopes: [pets:read], target_path: /v2/pets, mcp: { tool_name: list_pets } }\n  - { id: gone, methods: [GET], path: /gone }\n",
        )
        .unwrap();
        stored.description = "ours".into();
        let merged = merge_into(stored, &imported);
        assert_eq!(merged.description, "ours");
        let ids: Vec<&str> = merged.operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["findPets", "addPet", "find_pet_by_id", "deletePet"]);
        let find = &merged.operations[0];
        assert_eq!(find.scopes, ["pets:read"], "scopes set by hand stay");
        assert_eq!(find.target_path.as_deref(), Some("/v2/pets"));
        assert_eq!(
            find.mcp.as_ref().unwrap().tool_name.as_deref(),
            Some("list_pets")
        );
    }

    #[test]
    fn circular_inline_references_are_refused_not_followed_forever() {
        let doc = r##"
openapi: 3.1.0
info: { title: t, version: "1" }
x-loop: { type: object, properties: { again: { $ref: "#/x-loop" } } }
paths:
  /a:
    get:
      responses:
        "200": { description: ok, content: { application/json: { schema: { $ref: "#/x-loop" } } } }
  /b:
    get:
      parameters:
        - { name: X-Request-ID, in: header, schema: { type: string } }
      responses: {}
"##;
        let imported = import(doc).unwrap();
        let notes = imported.notes.join("\n");
        assert!(
            notes.contains("paths./a.get: a schema nests too deeply"),
            "{notes}"
        );
        assert!(
            notes.contains("header parameter 'X-Request-ID' is set by the gateway"),
            "{notes}"
        );
        assert_eq!(imported.operations.len(), 1);
    }

    #[test]
    fn refuses_what_is_not_openapi_3() {
        assert!(
            matches!(import("swagger: '2.0'\npaths: {}"), Err(ImportError::Unsupported(m)) if m.contains("Swagger 2.0"))
        );
        assert!(matches!(
            import("openapi: 4.0.0"),
            Err(ImportError::Unsupported(_))
        ));
        assert!(matches!(
            import(": : :\n- ["),
            Err(ImportError::Unreadable(_))
        ));
    }
}
