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
            let list =
                |n: &str| Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false);
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
                Field::new("cache_hit", DataType::Boolean, false),
                u64f("saved_nanousd"),
                s("guard"),
                u64f("predicted_cost_nanousd"),
            ]))
        })
        .clone()
}

/// Column builders for the `calls` schema. The collector appends each event as it arrives, so a pending
/// batch costs the compact columnar form (a few hundred bytes per event) rather than the struct's many
/// small heap strings.
pub struct CallEventBatchBuilder {
    schema_version: UInt16Builder,
    event_id: StringBuilder,
    request_id: StringBuilder,
    ts_start: TimestampMicrosecondBuilder,
    ts_end: TimestampMicrosecondBuilder,
    tenant: StringBuilder,
    department: StringBuilder,
    team: StringBuilder,
    project: StringBuilder,
    user: StringBuilder,
    api_key_id: StringBuilder,
    tag_keys: ListBuilder<StringBuilder>,
    tag_values: ListBuilder<StringBuilder>,
    endpoint: StringBuilder,
    client_api: StringBuilder,
    stream: BooleanBuilder,
    provider: StringBuilder,
    upstream: StringBuilder,
    requested_model: StringBuilder,
    served_model: StringBuilder,
    route: StringBuilder,
    routing_strategy: StringBuilder,
    attempt: UInt16Builder,
    fallback_from: StringBuilder,
    status_code: UInt16Builder,
    outcome: StringBuilder,
    error_type: StringBuilder,
    finish_reason: StringBuilder,
    input_tokens: UInt64Builder,
    output_tokens: UInt64Builder,
    cached_input_tokens: UInt64Builder,
    cache_write_tokens: UInt64Builder,
    reasoning_tokens: UInt64Builder,
    usage_source: StringBuilder,
    cost_nanousd: UInt64Builder,
    price_id: StringBuilder,
    latency_ms: UInt32Builder,
    ttft_ms: UInt32Builder,
    upstream_latency_ms: UInt32Builder,
    gateway_overhead_us: UInt32Builder,
    request_bytes: UInt64Builder,
    response_bytes: UInt64Builder,
    cache_hit: BooleanBuilder,
    saved_nanousd: UInt64Builder,
    guard: StringBuilder,
    predicted_cost_nanousd: UInt64Builder,
    rows: usize,
}

impl Default for CallEventBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CallEventBatchBuilder {
    pub fn new() -> Self {
        let s = StringBuilder::new;
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        CallEventBatchBuilder {
            schema_version: UInt16Builder::new(),
            event_id: s(),
            request_id: s(),
            ts_start: ts(),
            ts_end: ts(),
            tenant: s(),
            department: s(),
            team: s(),
            project: s(),
            user: s(),
            api_key_id: s(),
            tag_keys: ListBuilder::new(s()),
            tag_values: ListBuilder::new(s()),
            endpoint: s(),
            client_api: s(),
            stream: BooleanBuilder::new(),
            provider: s(),
            upstream: s(),
            requested_model: s(),
            served_model: s(),
            route: s(),
            routing_strategy: s(),
            attempt: UInt16Builder::new(),
            fallback_from: s(),
            status_code: UInt16Builder::new(),
            outcome: s(),
            error_type: s(),
            finish_reason: s(),
            input_tokens: UInt64Builder::new(),
            output_tokens: UInt64Builder::new(),
            cached_input_tokens: UInt64Builder::new(),
            cache_write_tokens: UInt64Builder::new(),
            reasoning_tokens: UInt64Builder::new(),
            usage_source: s(),
            cost_nanousd: UInt64Builder::new(),
            price_id: s(),
            latency_ms: UInt32Builder::new(),
            ttft_ms: UInt32Builder::new(),
            upstream_latency_ms: UInt32Builder::new(),
            gateway_overhead_us: UInt32Builder::new(),
            request_bytes: UInt64Builder::new(),
            response_bytes: UInt64Builder::new(),
            cache_hit: BooleanBuilder::new(),
            saved_nanousd: UInt64Builder::new(),
            guard: s(),
            predicted_cost_nanousd: UInt64Builder::new(),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, e: &CallEvent) {
        self.schema_version.append_value(e.schema_version);
        self.event_id.append_value(&e.event_id);
        self.request_id.append_value(&e.request_id);
        self.ts_start.append_value(e.ts_start_us);
        self.ts_end.append_value(e.ts_end_us);
        self.tenant.append_value(&e.tenant);
        self.department.append_value(&e.department);
        self.team.append_value(&e.team);
        self.project.append_value(&e.project);
        self.user.append_value(&e.user);
        self.api_key_id.append_value(&e.api_key_id);
        for (k, v) in &e.tags {
            self.tag_keys.values().append_value(k);
            self.tag_values.values().append_value(v);
        }
        self.tag_keys.append(true);
        self.tag_values.append(true);
        self.endpoint.append_value(e.endpoint.as_str());
        self.client_api.append_value(e.client_api.as_str());
        self.stream.append_value(e.stream);
        self.provider.append_value(&e.provider);
        self.upstream.append_value(&e.upstream);
        self.requested_model.append_value(&e.requested_model);
        self.served_model.append_value(&e.served_model);
        self.route.append_value(&e.route);
        self.routing_strategy.append_value(&e.routing_strategy);
        self.attempt.append_value(e.attempt);
        self.fallback_from.append_value(&e.fallback_from);
        self.status_code.append_value(e.status_code);
        self.outcome.append_value(e.outcome.as_str());
        self.error_type.append_value(&e.error_type);
        self.finish_reason.append_value(&e.finish_reason);
        self.input_tokens.append_value(e.input_tokens);
        self.output_tokens.append_value(e.output_tokens);
        self.cached_input_tokens.append_value(e.cached_input_tokens);
        self.cache_write_tokens.append_value(e.cache_write_tokens);
        self.reasoning_tokens.append_value(e.reasoning_tokens);
        self.usage_source.append_value(e.usage_source.as_str());
        self.cost_nanousd.append_value(e.cost_nanousd);
        self.price_id.append_value(&e.price_id);
        self.latency_ms.append_value(e.latency_ms);
        self.ttft_ms.append_value(e.ttft_ms);
        self.upstream_latency_ms.append_value(e.upstream_latency_ms);
        self.gateway_overhead_us.append_value(e.gateway_overhead_us);
        self.request_bytes.append_value(e.request_bytes);
        self.response_bytes.append_value(e.response_bytes);
        self.cache_hit.append_value(e.cache_hit);
        self.saved_nanousd.append_value(e.saved_nanousd);
        self.guard.append_value(&e.guard);
        self.predicted_cost_nanousd.append_value(e.predicted_cost_nanousd);
        self.rows += 1;
    }

    /// The rows appended so far, in [`call_event_schema`] order; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.schema_version.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.ts_start.finish()),
            Arc::new(self.ts_end.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.department.finish()),
            Arc::new(self.team.finish()),
            Arc::new(self.project.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.api_key_id.finish()),
            Arc::new(self.tag_keys.finish()),
            Arc::new(self.tag_values.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.client_api.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.upstream.finish()),
            Arc::new(self.requested_model.finish()),
            Arc::new(self.served_model.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.routing_strategy.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.fallback_from.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.finish_reason.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.cached_input_tokens.finish()),
            Arc::new(self.cache_write_tokens.finish()),
            Arc::new(self.reasoning_tokens.finish()),
            Arc::new(self.usage_source.finish()),
            Arc::new(self.cost_nanousd.finish()),
            Arc::new(self.price_id.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.upstream_latency_ms.finish()),
            Arc::new(self.gateway_overhead_us.finish()),
            Arc::new(self.request_bytes.finish()),
            Arc::new(self.response_bytes.finish()),
            Arc::new(self.cache_hit.finish()),
            Arc::new(self.saved_nanousd.finish()),
            Arc::new(self.guard.finish()),
            Arc::new(self.predicted_cost_nanousd.finish()),
        ];
        RecordBatch::try_new(call_event_schema(), columns)
    }
}

/// Converts events to one record batch in [`call_event_schema`] order.
pub fn to_record_batch(events: &[CallEvent]) -> Result<RecordBatch, ArrowError> {
    let mut b = CallEventBatchBuilder::new();
    events.iter().for_each(|e| b.append(e));
    b.finish()
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
