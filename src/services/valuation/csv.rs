//! CSV import of comparable sales.
//!
//! Imports are partial by design: one bad row must not sink a file of hundreds of good ones,
//! and the operator needs to know exactly which lines to fix. So every good row is kept and
//! every bad row is reported by its 1-based line number with a stable code. The header is
//! required (columns are matched by name, in any order) because a header-less file silently
//! shifted by one column would otherwise import plausible-looking garbage.
//!
//! The reader follows RFC 4180: quoted fields may hold commas, doubled quotes and line breaks;
//! a record's line number is the line it starts on.

use super::codes;
use super::facts::{parse_value, sale_from_values, Raw, Sale, SALE_SPECS};
use crate::services::fields::describe;
use serde::Serialize;

/// Most data rows one import may hold; rows beyond it are reported, not read.
pub const MAX_IMPORT_ROWS: usize = 5_000;
/// Largest CSV text one import may be, in bytes (about twice [`MAX_IMPORT_ROWS`] rows of the
/// shipped file's width).
pub const MAX_IMPORT_BYTES: usize = 1_000_000;

/// Names a leading row-id column may have (R's `write.csv` writes an empty name); the column
/// is accepted and ignored.
const ID_COLUMN_NAMES: [&str; 3] = ["", "id", "rownames"];

/// One refused CSV line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    /// 1-based line number where the offending record (or header) starts.
    pub line: usize,
    /// Stable code from [`super::codes`]; for a row with several bad fields, the first one's.
    pub code: &'static str,
    /// Human-readable explanation naming every bad field of the row.
    pub message: String,
}

impl RowError {
    fn new(line: usize, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            line,
            code,
            message: message.into(),
        }
    }
}

/// Parses a sales CSV: returns the good rows and one [`RowError`] per refused line.
///
/// The header must name every column of [`Sale`] (`price`, `lotsize`, `bedrooms`, `bathrms`,
/// `stories`, `driveway`, `recroom`, `fullbase`, `gashw`, `airco`, `garagepl`, `prefarea`;
/// case-insensitive, any order), optionally preceded by a row-id column named `""`, `id` or
/// `rownames`. A header error (missing, unknown or duplicate column) refuses the whole file.
/// Blank lines are skipped. Flags are yes/no (also true/false, 1/0).
pub fn parse_sales_csv(text: &str) -> (Vec<Sale>, Vec<RowError>) {
    if text.len() > MAX_IMPORT_BYTES {
        let message = format!(
            "CSV is {} bytes; at most {MAX_IMPORT_BYTES} are accepted",
            text.len()
        );
        return (
            Vec::new(),
            vec![RowError::new(1, codes::TOO_LARGE, message)],
        );
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Records::new(text).filter(|r| !r.is_blank());
    let Some(header) = records.next() else {
        return (
            Vec::new(),
            vec![RowError::new(
                1,
                codes::MISSING_HEADER,
                "the CSV has no header line",
            )],
        );
    };
    let columns = match map_header(&header) {
        Ok(columns) => columns,
        Err(errors) => return (Vec::new(), errors),
    };

    let mut sales = Vec::new();
    let mut errors = Vec::new();
    for (count, record) in records.enumerate() {
        if count == MAX_IMPORT_ROWS {
            let message =
                format!("more than {MAX_IMPORT_ROWS} data rows; this and later rows were not read");
            errors.push(RowError::new(record.line, codes::TOO_MANY_ROWS, message));
            break;
        }
        match read_row(&record, &columns) {
            Ok(sale) => sales.push(sale),
            Err(e) => errors.push(e),
        }
    }
    (sales, errors)
}

/// For each CSV column, the index into [`SALE_SPECS`] it fills, or `None` for the id column.
fn map_header(header: &Record) -> Result<Vec<Option<usize>>, Vec<RowError>> {
    let line = header.line;
    if let Some(message) = header.error {
        return Err(vec![RowError::new(line, codes::BAD_QUOTE, message)]);
    }
    let mut errors = Vec::new();
    let mut columns = Vec::with_capacity(header.fields.len());
    let mut seen = [false; SALE_SPECS.len()];
    for (position, name) in header.fields.iter().enumerate() {
        let key = name.trim().to_ascii_lowercase();
        match SALE_SPECS.iter().position(|s| s.name == key) {
            Some(i) if seen[i] => {
                errors.push(RowError::new(
                    line,
                    codes::DUPLICATE_COLUMN,
                    format!("column {key:?} appears twice"),
                ));
            }
            Some(i) => {
                seen[i] = true;
                columns.push(Some(i));
            }
            None if position == 0 && ID_COLUMN_NAMES.contains(&key.as_str()) => columns.push(None),
            None => errors.push(RowError::new(
                line,
                codes::UNKNOWN_COLUMN,
                format!("unknown column {name:?}"),
            )),
        }
    }
    for (spec, _) in SALE_SPECS.iter().zip(seen).filter(|(_, seen)| !seen) {
        errors.push(RowError::new(
            line,
            codes::MISSING_COLUMN,
            format!("required column {:?} is missing", spec.name),
        ));
    }
    if errors.is_empty() {
        Ok(columns)
    } else {
        Err(errors)
    }
}

fn read_row(record: &Record, columns: &[Option<usize>]) -> Result<Sale, RowError> {
    if let Some(message) = record.error {
        return Err(RowError::new(record.line, codes::BAD_QUOTE, message));
    }
    if record.fields.len() != columns.len() {
        let message = format!(
            "expected {} fields, found {}",
            columns.len(),
            record.fields.len()
        );
        return Err(RowError::new(
            record.line,
            codes::WRONG_FIELD_COUNT,
            message,
        ));
    }
    let mut values = [0u64; SALE_SPECS.len()];
    let mut field_errors = Vec::new();
    for (cell, column) in record.fields.iter().zip(columns) {
        let Some(i) = *column else { continue };
        match parse_value(&SALE_SPECS[i], Raw::Text(cell)) {
            Ok(v) => values[i] = v,
            Err(e) => field_errors.push(e),
        }
    }
    match (field_errors.first(), sale_from_values(&values)) {
        (None, Some(sale)) => Ok(sale),
        (Some(first), _) => Err(RowError::new(
            record.line,
            first.code,
            describe(&field_errors),
        )),
        (None, None) => Err(RowError::new(
            record.line,
            codes::WRONG_FIELD_COUNT,
            "row could not be read",
        )),
    }
}

/// One CSV record: its fields with quotes removed, the line it starts on, and a quoting
/// error if the record is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    line: usize,
    fields: Vec<String>,
    error: Option<&'static str>,
}

impl Record {
    fn is_blank(&self) -> bool {
        self.error.is_none() && self.fields.len() == 1 && self.fields[0].trim().is_empty()
    }
}

/// An iterator of [`Record`]s over CSV text.
struct Records<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    Start,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// After a quoted field's closing quote.
    AfterQuote,
}

impl<'a> Records<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    /// Consumes a line break (`\n`, `\r\n` or a lone `\r`) if `c` starts one.
    fn is_line_break(&mut self, c: char) -> bool {
        if c == '\r' && self.chars.peek() == Some(&'\n') {
            self.chars.next();
        }
        c == '\n' || c == '\r'
    }
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.chars.peek()?;
        let line = self.line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut state = State::Start;
        let mut error = None;
        while let Some(c) = self.chars.next() {
            match (state, c) {
                (State::Quoted, '"') if self.chars.peek() == Some(&'"') => {
                    self.chars.next();
                    field.push('"');
                }
                (State::Quoted, '"') => state = State::AfterQuote,
                (State::Quoted, c) => {
                    if c == '\n' || (c == '\r' && self.chars.peek() != Some(&'\n')) {
                        self.line += 1;
                    }
                    field.push(c);
                }
                (_, ',') => {
                    fields.push(std::mem::take(&mut field));
                    state = State::Start;
                }
                (_, c) if self.is_line_break(c) => {
                    self.line += 1;
                    fields.push(field);
                    return Some(Record {
                        line,
                        fields,
                        error,
                    });
                }
                (State::Start, '"') => state = State::Quoted,
                (State::Start | State::Unquoted, c) => {
                    field.push(c);
                    state = State::Unquoted;
                }
                (State::AfterQuote, ' ' | '\t') => {}
                (State::AfterQuote, _) => {
                    error = Some("text after a closing quote");
                    state = State::Unquoted;
                }
            }
        }
        if state == State::Quoted {
            error = Some("a quoted field is never closed");
        }
        fields.push(field);
        Some(Record {
            line,
            fields,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#""","price","lotsize","bedrooms","bathrms","stories","driveway","recroom","fullbase","gashw","airco","garagepl","prefarea""#;
    const ROW1: &str = r#""1",42000,5850,3,1,2,"yes","no","yes","no","no",1,"no""#;

    fn lines_and_codes(errors: &[RowError]) -> Vec<(usize, &'static str)> {
        errors.iter().map(|e| (e.line, e.code)).collect()
    }

    #[test]
    fn shipped_file_imports_completely() {
        let (sales, errors) =
            parse_sales_csv(include_str!("../../../data/windsor-housing-1987.csv"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(sales.len(), 546);
        assert_eq!(sales[0].price, 42000);
        assert_eq!(sales[0].facts.lotsize, 5850);
        assert!(sales[0].facts.driveway && sales[0].facts.fullbase && !sales[0].facts.prefarea);
        // Row id 417 is written "1e+05" by R.
        assert_eq!(sales[416].price, 100_000);
        assert_eq!(sales[545].price, 105_000);
    }

    #[test]
    fn header_variants_are_accepted() {
        let plain = "price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl,prefarea\n\
                     42000,5850,3,1,2,yes,no,yes,no,no,1,no\n";
        let (a, e) = parse_sales_csv(plain);
        assert!(e.is_empty(), "{e:?}");
        let with_id = format!("{HEADER}\n{ROW1}\n");
        let (b, e) = parse_sales_csv(&with_id);
        assert!(e.is_empty(), "{e:?}");
        let reordered = "ID,PrefArea,price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl\r\n\
                         x,no,42000,5850,3,1,2,yes,no,yes,no,no,1\r\n";
        let (c, e) = parse_sales_csv(reordered);
        assert!(e.is_empty(), "{e:?}");
        let bom = format!("\u{feff}{plain}");
        let (d, e) = parse_sales_csv(&bom);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.len(), 1);
        assert!(a == b && b == c && c == d);
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let text = format!(
            "{HEADER}\n\"a,\"\"b\"\"\",\"42000\" ,5850,3,1,2,\"yes\",no,yes,no,no,1,no\n\"multi\nline\nid\",50000,6000,3,1,2,yes,no,yes,no,no,1,no\n{ROW1}\n"
        );
        let (sales, errors) = parse_sales_csv(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            sales.iter().map(|s| s.price).collect::<Vec<_>>(),
            vec![42000, 50000, 42000]
        );
        let mut records = Records::new("\"a,\"\"b\"\"\",c\n\"x\ny\",z\nlast");
        let first = records.next().unwrap();
        assert_eq!(
            (first.line, first.fields),
            (1, vec!["a,\"b\"".to_string(), "c".to_string()])
        );
        let second = records.next().unwrap();
        assert_eq!(
            (second.line, second.fields),
            (2, vec!["x\ny".to_string(), "z".to_string()])
        );
        assert_eq!(records.next().unwrap().line, 4);
        assert!(records.next().is_none());
    }

    #[test]
    fn bad_rows_are_reported_by_line_and_good_rows_kept() {
        let text = [
            HEADER,
            ROW1,                                                         // 2 ok
            r#""2",cheap,4000,2,1,1,"yes","no","no","no","no",0,"no""#,   // 3 bad number
            "",                                                           // 4 blank, skipped
            r#""3",49500,3060,3,1,1,"maybe","no","no","no","no",0,"no""#, // 5 bad flag
            r#""4",60500,6650,3,1,2,"yes","yes","no","no","no",0"#,       // 6 short
            r#""5",61000,6360,2,1,1,"yes","no","no","no","no",0,"no""#,   // 7 ok
            r#""6",66000,,99,1,1,"yes","no","no","no","no",0,"no""#,      // 8 missing + range
            r#""7",10,6360,2.5,1,1,"yes","no","no","no","no",0,"no""#,    // 9 range + fraction
            r#""8",61000,6360,2,1,1,"yes"x,"no","no","no","no",0,"no""#,  // 10 bad quote
        ]
        .join("\n");
        let (sales, errors) = parse_sales_csv(&text);
        assert_eq!(sales.len(), 2);
        assert_eq!(
            lines_and_codes(&errors),
            vec![
                (3, codes::INVALID_NUMBER),
                (5, codes::INVALID_FLAG),
                (6, codes::WRONG_FIELD_COUNT),
                (8, codes::MISSING_FIELD),
                (9, codes::OUT_OF_RANGE),
                (10, codes::BAD_QUOTE),
            ]
        );
        assert!(
            errors[3].message.contains("lotsize") && errors[3].message.contains("bedrooms"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4].message.contains("bedrooms: \"2.5\""),
            "{}",
            errors[4]
        );
        assert_eq!(
            errors[2].to_string(),
            "line 6: expected 13 fields, found 12"
        );
    }

    #[test]
    fn header_errors_refuse_the_file() {
        assert_eq!(
            lines_and_codes(&parse_sales_csv("").1),
            vec![(1, codes::MISSING_HEADER)]
        );
        assert_eq!(
            lines_and_codes(&parse_sales_csv("\n\n").1),
            vec![(1, codes::MISSING_HEADER)]
        );
        let (sales, errors) = parse_sales_csv(&format!("{ROW1}\n{ROW1}\n"));
        assert!(sales.is_empty());
        assert!(errors.iter().any(|e| e.code == codes::UNKNOWN_COLUMN));
        assert!(errors.iter().any(|e| e.code == codes::MISSING_COLUMN));
        let dup = "\n\nprice,price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl\n1,1\n";
        assert_eq!(
            lines_and_codes(&parse_sales_csv(dup).1),
            vec![(3, codes::DUPLICATE_COLUMN), (3, codes::MISSING_COLUMN)]
        );
        let id_late = "price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl,prefarea,id\n";
        assert_eq!(
            lines_and_codes(&parse_sales_csv(id_late).1),
            vec![(1, codes::UNKNOWN_COLUMN)]
        );
    }

    #[test]
    fn unterminated_quote_is_reported_at_its_start() {
        let text = format!("{HEADER}\n{ROW1}\n\"9\",42000,5850,3,1,2,\"yes,no\n{ROW1}\n");
        let (sales, errors) = parse_sales_csv(&text);
        assert_eq!(sales.len(), 1);
        assert_eq!(lines_and_codes(&errors), vec![(3, codes::BAD_QUOTE)]);
        let text = format!("{HEADER}\n{ROW1}\n{ROW1}\n\"9,42000\n5850\n");
        let (sales, errors) = parse_sales_csv(&text);
        assert_eq!(sales.len(), 2);
        assert_eq!(lines_and_codes(&errors), vec![(4, codes::BAD_QUOTE)]);
        assert!(errors[0].message.contains("never closed"), "{}", errors[0]);
    }

    #[test]
    fn imports_are_bounded() {
        let mut text = format!("{HEADER}\n");
        for _ in 0..=MAX_IMPORT_ROWS {
            text.push_str(ROW1);
            text.push('\n');
        }
        let (sales, errors) = parse_sales_csv(&text);
        assert_eq!(sales.len(), MAX_IMPORT_ROWS);
        assert_eq!(
            lines_and_codes(&errors),
            vec![(MAX_IMPORT_ROWS + 2, codes::TOO_MANY_ROWS)]
        );
        let huge = " ".repeat(MAX_IMPORT_BYTES + 1);
        assert_eq!(
            lines_and_codes(&parse_sales_csv(&huge).1),
            vec![(1, codes::TOO_LARGE)]
        );
    }
}
