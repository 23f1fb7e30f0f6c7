//! Property facts and sales: the typed record, its import bounds, and the one validation path
//! that CSV import, JSON import and estimate requests all share.
//!
//! Every field is described once in a spec table ([`SALE_SPECS`]); parsing a raw value
//! (CSV text or a JSON value) and checking an already typed value both go through it, so the
//! three entry points cannot drift apart in what they accept.

use super::codes;
use crate::services::fields::{describe, FieldError};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Accepted sale prices (whole currency units). Wide on purpose: the bound only rejects
/// obvious unit mistakes (cents, thousands) and keeps `ln(price)` finite.
pub const PRICE_RANGE: RangeInclusive<u64> = 1_000..=100_000_000;
/// Accepted lot sizes in square feet (about 10 m² to 23 acres).
pub const LOTSIZE_RANGE: RangeInclusive<u64> = 100..=1_000_000;
/// Accepted bedroom counts.
pub const BEDROOMS_RANGE: RangeInclusive<u64> = 0..=20;
/// Accepted full-bathroom counts.
pub const BATHRMS_RANGE: RangeInclusive<u64> = 0..=20;
/// Accepted storey counts (excluding the basement).
pub const STORIES_RANGE: RangeInclusive<u64> = 1..=10;
/// Accepted garage places.
pub const GARAGEPL_RANGE: RangeInclusive<u64> = 0..=10;

/// What is known about a property, the inputs of a valuation.
///
/// Field names follow the Windsor data set's columns so that a CSV header, a D1 row and a
/// JSON request all use the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PropertyFacts {
    /// Lot size in square feet.
    pub lotsize: u32,
    /// Number of bedrooms.
    pub bedrooms: u8,
    /// Number of full bathrooms.
    pub bathrms: u8,
    /// Number of storeys, excluding the basement.
    pub stories: u8,
    /// Has a driveway.
    pub driveway: bool,
    /// Has a recreation room.
    pub recroom: bool,
    /// Has a full finished basement.
    pub fullbase: bool,
    /// Uses gas for hot water heating.
    pub gashw: bool,
    /// Has central air conditioning.
    pub airco: bool,
    /// Number of garage places.
    pub garagepl: u8,
    /// Is in a preferred neighbourhood.
    pub prefarea: bool,
}

/// One comparable sale: the facts of a sold property and its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sale {
    /// Sale price in whole currency units.
    pub price: u64,
    /// What was sold.
    pub facts: PropertyFacts,
}

/// Number of fields in [`PropertyFacts`].
pub(crate) const N_FACTS: usize = 11;

/// How a field's raw value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole number within the bounds.
    Count(RangeInclusive<u64>),
    /// A yes/no flag, stored as 0 or 1.
    Flag,
}

/// One field: its column/key name and how it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Column name in CSV headers and key in JSON objects.
    pub(crate) name: &'static str,
    /// How the value is read and bounded.
    pub(crate) kind: Kind,
}

/// Every field of a sale row: `price` first, then the facts in [`PropertyFacts::to_values`]
/// order.
pub(crate) static SALE_SPECS: [Spec; N_FACTS + 1] = [
    Spec {
        name: "price",
        kind: Kind::Count(PRICE_RANGE),
    },
    Spec {
        name: "lotsize",
        kind: Kind::Count(LOTSIZE_RANGE),
    },
    Spec {
        name: "bedrooms",
        kind: Kind::Count(BEDROOMS_RANGE),
    },
    Spec {
        name: "bathrms",
        kind: Kind::Count(BATHRMS_RANGE),
    },
    Spec {
        name: "stories",
        kind: Kind::Count(STORIES_RANGE),
    },
    Spec {
        name: "driveway",
        kind: Kind::Flag,
    },
    Spec {
        name: "recroom",
        kind: Kind::Flag,
    },
    Spec {
        name: "fullbase",
        kind: Kind::Flag,
    },
    Spec {
        name: "gashw",
        kind: Kind::Flag,
    },
    Spec {
        name: "airco",
        kind: Kind::Flag,
    },
    Spec {
        name: "garagepl",
        kind: Kind::Count(GARAGEPL_RANGE),
    },
    Spec {
        name: "prefarea",
        kind: Kind::Flag,
    },
];

/// The fact fields only (no price), in [`PropertyFacts::to_values`] order.
pub(crate) fn fact_specs() -> &'static [Spec] {
    &SALE_SPECS[1..]
}

impl PropertyFacts {
    /// The facts as whole numbers (flags as 0/1) in spec order; the single place, with
    /// [`PropertyFacts::from_values`], that knows the field order.
    pub(crate) fn to_values(self) -> [u64; N_FACTS] {
        [
            u64::from(self.lotsize),
            u64::from(self.bedrooms),
            u64::from(self.bathrms),
            u64::from(self.stories),
            u64::from(self.driveway),
            u64::from(self.recroom),
            u64::from(self.fullbase),
            u64::from(self.gashw),
            u64::from(self.airco),
            u64::from(self.garagepl),
            u64::from(self.prefarea),
        ]
    }

    /// Inverse of [`PropertyFacts::to_values`]. Callers pass values already checked against
    /// the specs, whose bounds fit the narrower field types; saturation is only a guard.
    pub(crate) fn from_values(v: &[u64; N_FACTS]) -> Self {
        let small = |x: u64| u8::try_from(x).unwrap_or(u8::MAX);
        Self {
            lotsize: u32::try_from(v[0]).unwrap_or(u32::MAX),
            bedrooms: small(v[1]),
            bathrms: small(v[2]),
            stories: small(v[3]),
            driveway: v[4] != 0,
            recroom: v[5] != 0,
            fullbase: v[6] != 0,
            gashw: v[7] != 0,
            airco: v[8] != 0,
            garagepl: small(v[9]),
            prefarea: v[10] != 0,
        }
    }
}

/// Property facts or a sale that failed validation; lists every offending field, not just the
/// first, so a caller can fix its input in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", describe(errors))]
pub struct ValidationError {
    /// Each offending field, in field order.
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// One code for the whole refusal: the shared code when every field error has the same
    /// one (e.g. [`codes::OUTSIDE_FITTED_RANGE`]), otherwise [`codes::INVALID_FACTS`].
    pub fn code(&self) -> &'static str {
        match self.errors.first() {
            Some(first) if self.errors.iter().all(|e| e.code == first.code) => first.code,
            _ => codes::INVALID_FACTS,
        }
    }
}

/// A raw field value before parsing: CSV text or a JSON value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// A CSV cell, quotes already removed.
    Text(&'a str),
    /// A JSON value (absent keys are passed as `Null`).
    Json(&'a serde_json::Value),
}

/// Parses and bounds-checks one raw value against its spec; flags come back as 0/1.
pub(crate) fn parse_value(spec: &Spec, raw: Raw<'_>) -> Result<u64, FieldError> {
    let missing = || FieldError::new(spec.name, codes::MISSING_FIELD, "is required".to_string());
    let value = match (&spec.kind, raw) {
        (_, Raw::Json(serde_json::Value::Null)) => return Err(missing()),
        (_, Raw::Text(t)) if is_missing_text(t) => return Err(missing()),
        (Kind::Count(_), Raw::Text(t)) => whole_number(spec.name, t.trim().parse::<f64>().ok(), t)?,
        (Kind::Count(_), Raw::Json(serde_json::Value::Number(n))) => {
            whole_number(spec.name, n.as_f64(), &n.to_string())?
        }
        (Kind::Count(_), Raw::Json(other)) => {
            return Err(FieldError::new(
                spec.name,
                codes::INVALID_NUMBER,
                format!("expected a number, got {}", json_kind(other)),
            ))
        }
        (Kind::Flag, Raw::Text(t)) => flag_text(spec.name, t)?,
        (Kind::Flag, Raw::Json(serde_json::Value::Bool(b))) => u64::from(*b),
        (Kind::Flag, Raw::Json(serde_json::Value::String(s))) => flag_text(spec.name, s)?,
        (Kind::Flag, Raw::Json(serde_json::Value::Number(n))) => match n.as_u64() {
            Some(v @ (0 | 1)) => v,
            _ => return Err(bad_flag(spec.name, &n.to_string())),
        },
        (Kind::Flag, Raw::Json(other)) => return Err(bad_flag(spec.name, json_kind(other))),
    };
    check_value(spec, value)
}

/// Bounds-checks an already typed value (flags must be 0/1).
pub(crate) fn check_value(spec: &Spec, value: u64) -> Result<u64, FieldError> {
    match &spec.kind {
        Kind::Count(range) if !range.contains(&value) => Err(FieldError::new(
            spec.name,
            codes::OUT_OF_RANGE,
            format!(
                "{value} is outside the accepted range {}..={}",
                range.start(),
                range.end()
            ),
        )),
        Kind::Flag if value > 1 => Err(bad_flag(spec.name, &value.to_string())),
        _ => Ok(value),
    }
}

fn is_missing_text(t: &str) -> bool {
    let t = t.trim();
    t.is_empty() || t.eq_ignore_ascii_case("na") || t.eq_ignore_ascii_case("null")
}

fn whole_number(name: &str, parsed: Option<f64>, shown: &str) -> Result<u64, FieldError> {
    // Parsing as f64 accepts the R-style "1e+05" found in the shipped data; exactness is
    // then demanded so 2.5 bedrooms is refused rather than truncated.
    match parsed {
        Some(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 1e15 => Ok(v as u64),
        _ => Err(FieldError::new(
            name,
            codes::INVALID_NUMBER,
            format!("{shown:?} is not a non-negative whole number"),
        )),
    }
}

fn flag_text(name: &str, t: &str) -> Result<u64, FieldError> {
    match t.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(1),
        "no" | "false" | "0" => Ok(0),
        _ => Err(bad_flag(name, &format!("{t:?}"))),
    }
}

fn bad_flag(name: &str, shown: &str) -> FieldError {
    FieldError::new(name, codes::INVALID_FLAG, format!("{shown} is not yes/no"))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses every spec's value out of a JSON object, collecting all errors. Keys outside
/// `specs` and `ignored` are refused so a typo is not mistaken for an absent field.
fn values_from_json(
    value: &serde_json::Value,
    specs: &[Spec],
    ignored: &[&str],
) -> Result<Vec<u64>, ValidationError> {
    let Some(object) = value.as_object() else {
        let message = format!("expected a JSON object, got {}", json_kind(value));
        return Err(ValidationError {
            errors: vec![FieldError::new("", codes::NOT_AN_OBJECT, message)],
        });
    };
    let mut errors = Vec::new();
    let mut values = Vec::with_capacity(specs.len());
    for spec in specs {
        let raw = object.get(spec.name).unwrap_or(&serde_json::Value::Null);
        match parse_value(spec, Raw::Json(raw)) {
            Ok(v) => values.push(v),
            Err(e) => errors.push(e),
        }
    }
    for key in object.keys() {
        if !specs.iter().any(|s| s.name == key) && !ignored.contains(&key.as_str()) {
            errors.push(FieldError::new(
                key,
                codes::UNKNOWN_FIELD,
                "is not a known field".to_string(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ValidationError { errors })
    }
}

/// Builds a sale from values in [`SALE_SPECS`] order (price first).
pub(crate) fn sale_from_values(values: &[u64]) -> Option<Sale> {
    let (&price, rest) = values.split_first()?;
    let facts: [u64; N_FACTS] = rest.try_into().ok()?;
    Some(Sale {
        price,
        facts: PropertyFacts::from_values(&facts),
    })
}

/// Validates one flat JSON sale row (the D1 row shape): `{"price":…, "lotsize":…, …}`.
///
/// Numbers must be whole; flags may be booleans, 0/1 or "yes"/"no". An `id` key is
/// tolerated and ignored (D1 rows carry their primary key); any other unknown key is refused.
pub fn validate_sale_json(value: &serde_json::Value) -> Result<Sale, ValidationError> {
    let values = values_from_json(value, &SALE_SPECS, &["id"])?;
    sale_from_values(&values).ok_or(ValidationError { errors: Vec::new() })
}

/// Validates the JSON body of an estimate request: a flat object with every fact field
/// (same value rules as [`validate_sale_json`]; no `price`, no unknown keys).
///
/// This only checks the import bounds; [`super::Model::check`] then checks the fitted range.
pub fn parse_facts_json(value: &serde_json::Value) -> Result<PropertyFacts, ValidationError> {
    let values = values_from_json(value, fact_specs(), &[])?;
    let values: [u64; N_FACTS] = values
        .try_into()
        .map_err(|_| ValidationError { errors: Vec::new() })?;
    Ok(PropertyFacts::from_values(&values))
}

/// Checks a typed sale against the import bounds (used on sales that did not come through a
/// parser, e.g. built in code or read back from storage).
pub fn validate_sale(sale: &Sale) -> Result<(), ValidationError> {
    let mut values = vec![sale.price];
    values.extend(sale.facts.to_values());
    let errors: Vec<FieldError> = SALE_SPECS
        .iter()
        .zip(values)
        .filter_map(|(spec, v)| check_value(spec, v).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { errors })
    }
}

/// A canonical cache key for an estimate request: equal facts give equal keys however they
/// were spelled on the wire (`"yes"`, `true` or `1`).
///
/// The key does not include the model: prefix it with [`super::Model::version`] when caching
/// results in KV, so a refit invalidates old answers.
pub fn normalised_key(facts: &PropertyFacts) -> String {
    let parts: Vec<String> = fact_specs()
        .iter()
        .zip(facts.to_values())
        .map(|(spec, v)| format!("{}={v}", spec.name))
        .collect();
    parts.join(";")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A valid flat sale row (the first row of the shipped file).
    pub(crate) fn row() -> serde_json::Value {
        json!({
            "price": 42000, "lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2,
            "driveway": "yes", "recroom": "no", "fullbase": "yes", "gashw": "no",
            "airco": "no", "garagepl": 1, "prefarea": "no"
        })
    }

    fn codes_of(e: &ValidationError) -> Vec<(&str, &str)> {
        e.errors
            .iter()
            .map(|f| (f.field.as_str(), f.code))
            .collect()
    }

    #[test]
    fn valid_row_parses_and_flag_spellings_agree() {
        let sale = validate_sale_json(&row()).unwrap();
        assert_eq!(sale.price, 42000);
        assert_eq!(sale.facts.lotsize, 5850);
        assert!(sale.facts.driveway && sale.facts.fullbase && !sale.facts.recroom);
        let mut alt = row();
        alt["driveway"] = json!(true);
        alt["recroom"] = json!(0);
        alt["fullbase"] = json!("YES");
        alt["price"] = json!(42000.0);
        alt["id"] = json!("row-1");
        assert_eq!(validate_sale_json(&alt).unwrap(), sale);
    }

    #[test]
    fn every_bad_field_is_listed_with_its_code() {
        let mut bad = row();
        bad.as_object_mut().unwrap().remove("bedrooms");
        bad["lotsize"] = json!(5);
        bad["bathrms"] = json!(1.5);
        bad["stories"] = json!("two");
        bad["airco"] = json!("maybe");
        bad["garagepl"] = json!(null);
        bad["colour"] = json!("red");
        let err = validate_sale_json(&bad).unwrap_err();
        assert_eq!(
            codes_of(&err),
            vec![
                ("lotsize", codes::OUT_OF_RANGE),
                ("bedrooms", codes::MISSING_FIELD),
                ("bathrms", codes::INVALID_NUMBER),
                ("stories", codes::INVALID_NUMBER),
                ("airco", codes::INVALID_FLAG),
                ("garagepl", codes::MISSING_FIELD),
                ("colour", codes::UNKNOWN_FIELD),
            ]
        );
        assert_eq!(err.code(), codes::INVALID_FACTS);
        assert!(err.to_string().contains("lotsize: 5 is outside"), "{err}");
    }

    #[test]
    fn non_objects_and_negative_numbers_are_refused() {
        let err = validate_sale_json(&json!([1, 2])).unwrap_err();
        assert_eq!(codes_of(&err), vec![("", codes::NOT_AN_OBJECT)]);
        assert_eq!(err.code(), codes::NOT_AN_OBJECT);
        let mut bad = row();
        bad["price"] = json!(-42000);
        assert_eq!(
            codes_of(&validate_sale_json(&bad).unwrap_err()),
            vec![("price", codes::INVALID_NUMBER)]
        );
        bad["price"] = json!(1e300);
        assert_eq!(
            codes_of(&validate_sale_json(&bad).unwrap_err()),
            vec![("price", codes::INVALID_NUMBER)]
        );
    }

    #[test]
    fn facts_request_refuses_price_and_id() {
        let mut body = row();
        let err = parse_facts_json(&body).unwrap_err();
        assert_eq!(codes_of(&err), vec![("price", codes::UNKNOWN_FIELD)]);
        body.as_object_mut().unwrap().remove("price");
        let facts = parse_facts_json(&body).unwrap();
        assert_eq!(facts, validate_sale_json(&row()).unwrap().facts);
        body["id"] = json!(7);
        assert_eq!(
            codes_of(&parse_facts_json(&body).unwrap_err()),
            vec![("id", codes::UNKNOWN_FIELD)]
        );
    }

    #[test]
    fn typed_sales_are_checked_against_the_same_bounds() {
        let mut sale = validate_sale_json(&row()).unwrap();
        assert!(validate_sale(&sale).is_ok());
        sale.price = 10;
        sale.facts.stories = 0;
        let err = validate_sale(&sale).unwrap_err();
        assert_eq!(
            codes_of(&err),
            vec![
                ("price", codes::OUT_OF_RANGE),
                ("stories", codes::OUT_OF_RANGE)
            ]
        );
        assert_eq!(err.code(), codes::OUT_OF_RANGE);
    }

    #[test]
    fn values_round_trip_and_key_is_canonical() {
        let facts = validate_sale_json(&row()).unwrap().facts;
        assert_eq!(PropertyFacts::from_values(&facts.to_values()), facts);
        let key = normalised_key(&facts);
        assert_eq!(
            key,
            "lotsize=5850;bedrooms=3;bathrms=1;stories=2;driveway=1;recroom=0;fullbase=1;\
             gashw=0;airco=0;garagepl=1;prefarea=0"
        );
        let other = PropertyFacts {
            airco: true,
            ..facts
        };
        assert_ne!(normalised_key(&other), key);
    }

    #[test]
    fn facts_serde_uses_the_column_names() {
        let facts = validate_sale_json(&row()).unwrap().facts;
        let text = serde_json::to_value(facts).unwrap();
        assert_eq!(text["lotsize"], json!(5850));
        assert_eq!(text["driveway"], json!(true));
        let back: PropertyFacts = serde_json::from_value(text).unwrap();
        assert_eq!(back, facts);
    }
}
