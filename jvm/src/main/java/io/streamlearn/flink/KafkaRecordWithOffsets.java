package io.streamlearn.flink;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Hands a Kafka record to Python with where it came from:
 * Row(partition INT, offset BIGINT, timestamp BIGINT, key BYTES, value BYTES, join STRING),
 * {@code join} the value of the header {@link JoinLogic#HEADER} (the outcome a training topic
 * record of the delayed-label join has), or null.
 *
 * <p>PyFlink's KafkaSource builder only offers value-only deserializers, which drop the
 * partition and offset. The training job needs both: for lineage (offsets per partition in
 * every model version) and for the dead-letter topic (where a bad event came from).
 */
public class KafkaRecordWithOffsets implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    public static final RowTypeInfo TYPE =
            new RowTypeInfo(
                    new TypeInformation<?>[] {
                        BasicTypeInfo.INT_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO
                    },
                    new String[] {"partition", "offset", "timestamp", "key", "value", "join"});

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out)
            throws IOException {
        byte[] key = record.key() == null ? new byte[0] : record.key();
        byte[] value = record.value() == null ? new byte[0] : record.value();
        Header join = record.headers().lastHeader(JoinLogic.HEADER);
        out.collect(Row.of(record.partition(), record.offset(), record.timestamp(), key, value,
                join == null || join.value() == null
                        ? null : new String(join.value(), StandardCharsets.UTF_8)));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return TYPE;
    }
}
