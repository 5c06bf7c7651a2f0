package push

import (
	"container/heap"
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// finish acknowledges and deletes a push that is done.
func (q *Queue) finish(t *task) {
	q.forget(t)
	q.ack(t.ref())
}

// forget stops holding t (without acknowledging it).
func (q *Queue) forget(t *task) {
	q.mu.Lock()
	if t.index >= 0 {
		heap.Remove(&q.retry, t.index)
	}
	delete(q.held, t.ref())
	q.mu.Unlock()
}

func (q *Queue) ack(e entryRef) { q.acks <- e }

// acker acknowledges and deletes finished entries in batches: one round
// trip every AckEvery (or every 1,024 entries) for all those finished
// meanwhile, whatever their shards (on a Cluster, go-redis sends each
// node its part of the pipeline, in parallel).
func (q *Queue) acker() {
	batch := make([]entryRef, 0, 1024)
	tick := time.NewTicker(q.opts.AckEvery)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-q.acks:
			if !ok {
				if len(batch) > 0 {
					q.flushAcks(batch)
				}
				return
			}
			batch = append(batch, e)
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

// flushAcks sends one XACK and one XDEL per stream, and retries the streams
// that failed for a while: an entry left unacknowledged would be sent again
// by the replica that takes it over.
func (q *Queue) flushAcks(entries []entryRef) {
	byStream := map[string][]string{}
	for _, e := range entries {
		byStream[e.stream] = append(byStream[e.stream], e.id)
	}
	deadline := time.Now().Add(q.opts.ClaimAfter / 2)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p := q.rdb.Pipeline()
		acks := map[string][2]redis.Cmder{}
		for stream, ids := range byStream {
			acks[stream] = [2]redis.Cmder{p.XAck(ctx, stream, group, ids...), p.XDel(ctx, stream, ids...)}
		}
		_, err := p.Exec(ctx)
		cancel()
		for stream, cmds := range acks {
			if e0, e1 := cmds[0].Err(), cmds[1].Err(); (e0 == nil || isNoGroup(e0)) && e1 == nil {
				delete(byStream, stream)
			}
		}
		if len(byStream) == 0 {
			return
		}
		if time.Now().After(deadline) {
			n := 0
			for _, ids := range byStream {
				n += len(ids)
			}
			q.log.Error("push: cannot acknowledge sent pushes; another replica may send them again", "n", n, "err", err)
			return
		}
		time.Sleep(min(time.Duration(try)*100*time.Millisecond, time.Second))
	}
}
