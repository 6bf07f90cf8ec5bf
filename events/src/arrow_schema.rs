//! The call event's Arrow schema (the Parquet file layout and the `calls` table analysts query) and the
//! conversion from events to record batches.

use crate::event::CallEvent;
use arrow::array::{
    ArrayRef, BooleanBuilder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use std::sync::{Arc, OnceLock};

/// Column order and types of the `calls` table. Tags are two parallel lists (`tag_keys`, `tag_values`)
/// rather than a map so that the same layout works in DataFusion and in every ClickHouse release.
pub fn call_event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let s = |n: &str| Field::new(n, DataType::Utf8, false);
            let u16f = |n: &str| Field::new(n, DataType::UInt16, false);
            let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
            let u64f = |n: &str| Field::new(n, DataType::UInt64, false);
            let list = |n: &str| {
                Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
            };
            Arc::new(Schema::new(vec![
                u16f("schema_version"),
                s("event_id"),
                s("request_id"),
                Field::new("ts_start", ts(), false),
                Field::new("ts_end", ts(), false),
                s("tenant"),
                s("department"),
                s("team"),
                s("project"),
                s("user"),
                s("api_key_id"),
                list("tag_keys"),
                list("tag_values"),
                s("endpoint"),
                s("client_api"),
                Field::new("stream", DataType::Boolean, false),
                s("provider"),
                s("upstream"),
                s("requested_model"),
                s("served_model"),
                s("route"),
                s("routing_strategy"),
                u16f("attempt"),
                s("fallback_from"),
                u16f("status_code"),
                s("outcome"),
                s("error_type"),
                s("finish_reason"),
                u64f("input_tokens"),
                u64f("output_tokens"),
                u64f("cached_input_tokens"),
                u64f("cache_write_tokens"),
                u64f("reasoning_tokens"),
                s("usage_source"),
                u64f("cost_nanousd"),
                s("price_id"),
                u32f("latency_ms"),
                u32f("ttft_ms"),
                u32f("upstream_latency_ms"),
                u32f("gateway_overhead_us"),
                u64f("request_bytes"),
                u64f("response_bytes"),
            ]))
        })
        .clone()
}

/// Converts events to one record batch in [`call_event_schema`] order.
pub fn to_record_batch(events: &[CallEvent]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let strings = |f: &dyn Fn(&CallEvent) -> &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for e in events {
            b.append_value(f(e));
        }
        Arc::new(b.finish())
    };
    let u16s = |f: &dyn Fn(&CallEvent) -> u16| -> ArrayRef {
        let mut b = UInt16Builder::with_capacity(n);
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let u32s = |f: &dyn Fn(&CallEvent) -> u32| -> ArrayRef {
        let mut b = UInt32Builder::with_capacity(n);
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let u64s = |f: &dyn Fn(&CallEvent) -> u64| -> ArrayRef {
        let mut b = UInt64Builder::with_capacity(n);
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let ts = |f: &dyn Fn(&CallEvent) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let tags = |keys: bool| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for e in events {
            for (k, v) in &e.tags {
                b.values().append_value(if keys { k } else { v });
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut stream = BooleanBuilder::with_capacity(n);
    events.iter().for_each(|e| stream.append_value(e.stream));

    let columns: Vec<ArrayRef> = vec![
        u16s(&|e| e.schema_version),
        strings(&|e| &e.event_id),
        strings(&|e| &e.request_id),
        ts(&|e| e.ts_start_us),
        ts(&|e| e.ts_end_us),
        strings(&|e| &e.tenant),
        strings(&|e| &e.department),
        strings(&|e| &e.team),
        strings(&|e| &e.project),
        strings(&|e| &e.user),
        strings(&|e| &e.api_key_id),
        tags(true),
        tags(false),
        strings(&|e| e.endpoint.as_str()),
        strings(&|e| e.client_api.as_str()),
        Arc::new(stream.finish()),
        strings(&|e| &e.provider),
        strings(&|e| &e.upstream),
        strings(&|e| &e.requested_model),
        strings(&|e| &e.served_model),
        strings(&|e| &e.route),
        strings(&|e| &e.routing_strategy),
        u16s(&|e| e.attempt),
        strings(&|e| &e.fallback_from),
        u16s(&|e| e.status_code),
        strings(&|e| e.outcome.as_str()),
        strings(&|e| &e.error_type),
        strings(&|e| &e.finish_reason),
        u64s(&|e| e.input_tokens),
        u64s(&|e| e.output_tokens),
        u64s(&|e| e.cached_input_tokens),
        u64s(&|e| e.cache_write_tokens),
        u64s(&|e| e.reasoning_tokens),
        strings(&|e| e.usage_source.as_str()),
        u64s(&|e| e.cost_nanousd),
        strings(&|e| &e.price_id),
        u32s(&|e| e.latency_ms),
        u32s(&|e| e.ttft_ms),
        u32s(&|e| e.upstream_latency_ms),
        u32s(&|e| e.gateway_overhead_us),
        u64s(&|e| e.request_bytes),
        u64s(&|e| e.response_bytes),
    ];
    RecordBatch::try_new(call_event_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;

    #[test]
    fn batch_matches_schema_and_values() {
        let mut a = CallEvent { cost_nanousd: 7, department: "eng".into(), ..Default::default() };
        a.tags.insert("env".into(), "prod".into());
        let b = CallEvent { cost_nanousd: u64::MAX, ..Default::default() };
        let batch = to_record_batch(&[a, b]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), call_event_schema().fields().len());
        let cost = batch.column_by_name("cost_nanousd").unwrap().as_primitive::<UInt64Type>();
        assert_eq!(cost.value(0), 7);
        assert_eq!(cost.value(1), u64::MAX);
        let keys = batch.column_by_name("tag_keys").unwrap().as_list::<i32>();
        assert_eq!(keys.value(0).len(), 1);
        assert_eq!(keys.value(1).len(), 0);
    }
}
