package recstream.flink;

import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * Passes (bucket, payload) records on and, before each checkpoint barrier, sends every bucket a
 * record with the empty payload: the keyed function downstream saves what it holds in memory
 * for that bucket into Flink's state then, so each checkpoint has it.
 */
public class MarkBuckets<T> extends AbstractStreamOperator<Tuple2<Integer, T>>
        implements OneInputStreamOperator<Tuple2<Integer, T>, Tuple2<Integer, T>> {
    private static final long serialVersionUID = 1L;
    private final int buckets;
    private final T empty;

    public MarkBuckets(int buckets, T empty) {
        if (buckets < 1) {
            throw new IllegalArgumentException("buckets must be >= 1");
        }
        this.buckets = buckets;
        this.empty = empty;
    }

    @Override
    public void processElement(StreamRecord<Tuple2<Integer, T>> record) {
        output.collect(record);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        for (int bucket = 0; bucket < buckets; bucket++) {
            output.collect(new StreamRecord<>(Tuple2.of(bucket, empty)));
        }
    }
}
