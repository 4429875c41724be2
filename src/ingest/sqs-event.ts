import type { IncomingMessage } from "./batch.ts";

/**
 * The parts of Lambda's SQS event that masq reads, declared here rather than taken from @types/aws-lambda.
 * Lambda sends more (receiptHandle, md5OfBody, messageAttributes, eventSourceARN, …); masq needs none of it:
 * the event source mapping deletes what the handler does not report as failed.
 */
export interface SqsRecord {
  messageId: string;
  body: string;
  /** SQS system attributes, as strings. SentTimestamp is epoch milliseconds. */
  attributes?: { SentTimestamp?: string; ApproximateReceiveCount?: string; [name: string]: string | undefined };
  receiptHandle?: string;
  eventSource?: string;
  eventSourceARN?: string;
  awsRegion?: string;
}

export interface SqsEvent {
  Records: SqsRecord[];
}

/** The partial batch response: only these messages come back to the queue (needs ReportBatchItemFailures). */
export interface SqsBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

/** One record as the pipeline's pure middle takes it. A missing or unreadable SentTimestamp gives null. */
export function incomingMessage(record: SqsRecord, receivedAt: Date): IncomingMessage {
  const sent = Number(record.attributes?.SentTimestamp);
  return {
    messageId: record.messageId,
    body: record.body ?? "",
    sentAt: Number.isFinite(sent) && sent > 0 ? new Date(sent) : null,
    receivedAt,
  };
}
