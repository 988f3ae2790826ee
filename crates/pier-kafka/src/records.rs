//! Producing and fetching records: enough of a client for Pier's own checks (and tests) to
//! write to and read from a partition through whatever address the cluster advertises.
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{BrokerConnection, KafkaError};

/// A topic as produce and fetch name it: by name and (Kafka 4.x) by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    pub name: String,
    pub id: uuid::Uuid,
}

impl BrokerConnection {
    /// Appends `values` to one partition (this broker must lead it) as one batch, acks=all;
    /// returns the offset of the first record.
    pub async fn produce(
        &mut self,
        topic: &TopicRef,
        partition: i32,
        values: &[Bytes],
    ) -> Result<i64, KafkaError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch only while offset - sequence is
                // constant; without a producer id the broker ignores sequences.
                sequence: i as i32,
                timestamp: now,
                key: None,
                value: Some(v.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| KafkaError::Encode {
            api: "Produce".into(),
            message: e.to_string(),
        })?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_topic_id(topic.id)
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let response = self.send(&request).await?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| self.malformed("Produce", "no partition in the answer"))?;
        if p.error_code != 0 {
            let mut message: Vec<String> = p.error_message.iter().map(|m| m.to_string()).collect();
            message.extend(p.record_errors.iter().map(|e| {
                let text = e.batch_index_error_message.as_ref().map(|m| m.to_string());
                format!("record {}: {}", e.batch_index, text.unwrap_or_default())
            }));
            let message = (!message.is_empty()).then(|| message.join("; "));
            return Err(KafkaError::broker(
                self.addr(),
                "Produce",
                p.error_code,
                message,
            ));
        }
        Ok(p.base_offset)
    }

    /// Reads records of one partition (this broker must lead it) from `offset`, up to about
    /// `max_bytes`; returns (offset, value) pairs and the partition's high watermark.
    pub async fn fetch(
        &mut self,
        topic: &TopicRef,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<(Vec<(i64, Bytes)>, i64), KafkaError> {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_topic_id(topic.id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let response = self.send(&request).await?;
        KafkaError::check(self.addr(), "Fetch", response.error_code, None)?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| self.malformed("Fetch", "no partition in the answer"))?;
        KafkaError::check(self.addr(), "Fetch", p.error_code, None)?;
        let mut out = Vec::new();
        if let Some(mut bytes) = p.records.clone() {
            let sets = RecordBatchDecoder::decode_all(&mut bytes)
                .map_err(|e| self.malformed("Fetch", &format!("record batch: {e}")))?;
            for set in sets {
                for r in set.records {
                    if r.offset >= offset
                        && let Some(v) = r.value
                    {
                        out.push((r.offset, v));
                    }
                }
            }
        }
        Ok((out, p.high_watermark))
    }

    fn malformed(&self, api: &str, message: &str) -> KafkaError {
        KafkaError::Decode {
            addr: self.addr().to_string(),
            api: api.into(),
            message: message.into(),
        }
    }
}
