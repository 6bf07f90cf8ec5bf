//! Size checks in front of the SQL functions whose output can be far larger than their input
//! (`repeat`, `lpad`, `rpad`, `replace`, `regexp_replace`, `array_repeat`, `range`, `generate_series`).
//! DataFusion's memory pool bounds operators (sorts, joins, aggregations) but not what a scalar function
//! allocates: `SELECT length(repeat('x', 300000000))` took 1.1 GB with a 64 MB limit. Each wrapped
//! function computes an upper bound of the bytes one call would build from its actual arguments and
//! refuses the call when it is over `query.memory_limit_mb`, before allocating anything. Nested calls
//! are checked one by one with their real inputs, so `repeat(repeat(…))` is bounded too.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionContext;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// How one function's output size is bounded from its arguments (all as arrays of the batch's rows).
type Bound = fn(&[ArrayRef]) -> u128;

/// A built-in function with a size check before each call.
#[derive(Debug)]
struct SizeChecked {
    inner: ScalarUDF,
    limit_bytes: u64,
    bound: Bound,
}

// The bound follows from the wrapped function, so equality and hash leave the fn pointer out.
impl PartialEq for SizeChecked {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.limit_bytes == other.limit_bytes
    }
}
impl Eq for SizeChecked {}
impl std::hash::Hash for SizeChecked {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.limit_bytes.hash(state);
    }
}

impl ScalarUDFImpl for SizeChecked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let bytes = (self.bound)(&arrays);
        if bytes > u128::from(self.limit_bytes) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "`{}` would build about {} MB, more than query.memory_limit_mb ({} MB)",
                self.inner.name(),
                bytes / (1024 * 1024),
                self.limit_bytes / (1024 * 1024)
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Replaces the listed built-ins of `ctx` with size-checked ones.
pub fn install(ctx: &SessionContext, limit_bytes: u64) {
    let wrapped: [(&str, Bound); 9] = [
        ("repeat", repeat_bound),
        ("lpad", pad_bound),
        ("rpad", pad_bound),
        ("replace", replace_bound),
        ("regexp_replace", regexp_replace_bound),
        ("array_repeat", array_repeat_bound),
        ("range", range_bound),
        ("generate_series", range_bound),
        ("array_resize", array_resize_bound),
    ];
    for (name, bound) in wrapped {
        let Ok(inner) = ctx.udf(name) else { continue };
        let checked = SizeChecked { inner: inner.as_ref().clone(), limit_bytes, bound };
        ctx.register_udf(ScalarUDF::new_from_impl(checked));
    }
}

/// Byte length of each string (0 for null or a non-string argument).
fn byte_lengths(a: &ArrayRef) -> Vec<u128> {
    match arrow::compute::kernels::length::length(a.as_ref()) {
        Ok(l) => match arrow::compute::cast(&l, &DataType::Int64) {
            Ok(l) => l.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0).max(0) as u128).collect(),
            Err(_) => vec![0; a.len()],
        },
        Err(_) => vec![0; a.len()],
    }
}

/// Each value as a non-negative count (0 for null or a value that is not a number).
fn counts(a: &ArrayRef) -> Vec<u128> {
    match arrow::compute::cast(a, &DataType::Int64) {
        Ok(c) => c.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0).max(0) as u128).collect(),
        Err(_) => vec![0; a.len()],
    }
}

fn arg(args: &[ArrayRef], i: usize) -> Option<&ArrayRef> {
    args.get(i)
}

/// Sum over rows of `f(row)`, saturating.
fn sum_rows(rows: usize, f: impl Fn(usize) -> u128) -> u128 {
    (0..rows).fold(0u128, |acc, i| acc.saturating_add(f(i)))
}

/// `repeat(s, n)`: |s| × n per row.
fn repeat_bound(args: &[ArrayRef]) -> u128 {
    let (Some(s), Some(n)) = (arg(args, 0), arg(args, 1)) else { return 0 };
    let (len, n) = (byte_lengths(s), counts(n));
    sum_rows(s.len(), |i| len[i].saturating_mul(n[i]))
}

/// `lpad(s, n [, fill])`: n characters of at most 4 bytes, plus s.
fn pad_bound(args: &[ArrayRef]) -> u128 {
    let (Some(s), Some(n)) = (arg(args, 0), arg(args, 1)) else { return 0 };
    let (len, n) = (byte_lengths(s), counts(n));
    let wide = arg(args, 2).map(byte_lengths).map(|f| f.iter().any(|&b| b > 1)).unwrap_or(false);
    let per_char = if wide { 4 } else { 1 };
    sum_rows(s.len(), |i| n[i].saturating_mul(per_char).saturating_add(len[i]))
}

/// `replace(s, from, to)`: at most |s| / max(|from|, 1) + 1 replacements of |to| bytes, plus s.
fn replace_bound(args: &[ArrayRef]) -> u128 {
    let (Some(s), Some(from), Some(to)) = (arg(args, 0), arg(args, 1), arg(args, 2)) else { return 0 };
    let (len, from, to) = (byte_lengths(s), byte_lengths(from), byte_lengths(to));
    sum_rows(s.len(), |i| (len[i] / from[i].max(1) + 1).saturating_mul(to[i]).saturating_add(len[i]))
}

/// `regexp_replace(s, pattern, replacement [, flags])`: a match at every position, each replaced by the
/// replacement with its group references expanded (each at most |s|).
fn regexp_replace_bound(args: &[ArrayRef]) -> u128 {
    let (Some(s), Some(r)) = (arg(args, 0), arg(args, 2)) else { return 0 };
    let (len, repl) = (byte_lengths(s), byte_lengths(r));
    sum_rows(s.len(), |i| (len[i] + 1).saturating_mul(repl[i] + 1).saturating_mul(2))
}

/// Bytes per row of an array argument (at least 8: an offset or a small value).
fn per_row_bytes(a: &ArrayRef) -> u128 {
    let rows = a.len().max(1) as u128;
    (a.get_array_memory_size() as u128 / rows).max(8)
}

/// `array_repeat(element, n)`: n copies of the element.
fn array_repeat_bound(args: &[ArrayRef]) -> u128 {
    let (Some(e), Some(n)) = (arg(args, 0), arg(args, 1)) else { return 0 };
    let (size, n) = (per_row_bytes(e), counts(n));
    sum_rows(e.len(), |i| n[i].saturating_mul(size))
}

/// `array_resize(array, n [, value])`: n elements of the array's element size.
fn array_resize_bound(args: &[ArrayRef]) -> u128 {
    let (Some(a), Some(n)) = (arg(args, 0), arg(args, 1)) else { return 0 };
    let n = counts(n);
    sum_rows(a.len(), |i| n[i].saturating_mul(16))
}

/// `range(start, stop [, step])` / `generate_series`, as a scalar building a list: 8 bytes per element.
/// Integer ranges only; a range of dates or timestamps is left to the pool and the timeout.
fn range_bound(args: &[ArrayRef]) -> u128 {
    let ints = |a: &ArrayRef| {
        matches!(
            a.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
        )
    };
    if !args.iter().all(ints) {
        return 0;
    }
    let signed = |a: &ArrayRef| -> Vec<i128> {
        match arrow::compute::cast(a, &DataType::Int64) {
            Ok(c) => c.as_primitive::<Int64Type>().iter().map(|v| i128::from(v.unwrap_or(0))).collect(),
            Err(_) => vec![0; a.len()],
        }
    };
    let (start, stop) = match args {
        [stop] => (vec![0; stop.len()], signed(stop)),
        [start, stop, ..] => (signed(start), signed(stop)),
        [] => return 0,
    };
    let step = args.get(2).map(signed).unwrap_or_else(|| vec![1; start.len()]);
    sum_rows(start.len(), |i| {
        let span = (stop[i] - start[i]).unsigned_abs();
        let step = step[i].unsigned_abs().max(1);
        (span / step + 1).saturating_mul(8)
    })
}
