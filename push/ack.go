package push

import (
	"container/heap"
	"context"
	"time"
)

// finish acknowledges and deletes a push that is done.
func (q *Queue) finish(t *task) {
	q.forget(t)
	q.ack(t.id)
}

// forget stops holding t (without acknowledging it).
func (q *Queue) forget(t *task) {
	q.mu.Lock()
	if t.index >= 0 {
		heap.Remove(&q.retry, t.index)
	}
	delete(q.held, t.id)
	q.mu.Unlock()
}

func (q *Queue) ack(id string) { q.acks <- id }

// acker acknowledges and deletes finished entries in batches: one round
// trip every AckEvery (or every 1,024 entries) for all those finished
// meanwhile.
func (q *Queue) acker() {
	batch := make([]string, 0, 1024)
	tick := time.NewTicker(q.opts.AckEvery)
	defer tick.Stop()
	for {
		select {
		case id, ok := <-q.acks:
			if !ok {
				if len(batch) > 0 {
					q.flushAcks(batch)
				}
				return
			}
			batch = append(batch, id)
			if len(batch) == cap(batch) {
				q.flushAcks(batch)
				batch = batch[:0]
			}
		case <-tick.C:
			if len(batch) > 0 {
				q.flushAcks(batch)
				batch = batch[:0]
			}
		}
	}
}

// flushAcks retries for a while: an entry left unacknowledged would be sent
// again by the replica that takes it over.
func (q *Queue) flushAcks(ids []string) {
	deadline := time.Now().Add(q.opts.ClaimAfter / 2)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p := q.rdb.Pipeline()
		p.XAck(ctx, q.keys.stream(), group, ids...)
		p.XDel(ctx, q.keys.stream(), ids...)
		_, err := p.Exec(ctx)
		cancel()
		if err == nil || isNoGroup(err) {
			return
		}
		if time.Now().After(deadline) {
			q.log.Error("push: cannot acknowledge sent pushes; another replica may send them again", "n", len(ids), "err", err)
			return
		}
		time.Sleep(min(time.Duration(try)*100*time.Millisecond, time.Second))
	}
}
