/**
 * Preloaded (`node --import`) into the benchmark's fauxqs process: gives every queue a ready list whose shift() is
 * O(1). fauxqs keeps a queue's ready messages in a plain array and takes them with Array.prototype.shift(), which
 * V8 does in O(length) once the array is large (about 140 µs per message with 100,000 waiting, measured). The SQS
 * server's cost per message would then grow with the backlog, so the "ceiling" would measure fauxqs's array and
 * the scaling run could not show whether masq stays flat. Real SQS does not behave like that.
 *
 * Only what fauxqs does with `queue.messages` is supported: push, shift, length, iteration, and assigning an array.
 */
type Message = object;

class ReadyList {
  private items: (Message | undefined)[] = [];
  private head = 0;

  constructor(initial: readonly Message[] = []) {
    this.items = [...initial];
  }

  get length(): number {
    return this.items.length - this.head;
  }

  push(...messages: Message[]): number {
    this.items.push(...messages);
    return this.length;
  }

  shift(): Message | undefined {
    if (this.head >= this.items.length) return undefined;
    const m = this.items[this.head];
    this.items[this.head++] = undefined;
    // Drop the consumed prefix once it is half the array: amortised O(1), memory bounded by twice the backlog.
    if (this.head > 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return m;
  }

  [Symbol.iterator](): Iterator<Message> {
    return (this.items.slice(this.head) as Message[])[Symbol.iterator]();
  }
}

interface QueueLike {
  messages: unknown;
}

const storeModule = new URL("./sqs/sqsStore.js", import.meta.resolve("fauxqs")).href;
const { SqsStore } = (await import(storeModule)) as { SqsStore: { prototype: { createQueue: (this: unknown, ...args: unknown[]) => QueueLike } } };
const createQueue = SqsStore.prototype.createQueue;
SqsStore.prototype.createQueue = function (this: unknown, ...args: unknown[]): QueueLike {
  const queue = createQueue.apply(this, args);
  let ready = new ReadyList(queue.messages as Message[]);
  Object.defineProperty(queue, "messages", {
    get: () => ready,
    // purge() assigns a fresh array.
    set: (v: Message[]) => (ready = new ReadyList(v)),
  });
  return queue;
};
