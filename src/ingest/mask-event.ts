import type { LoginEvent } from "./login-event.ts";
import type { Pseudonymizer } from "./pseudonymize.ts";

/** One row of user_logins, as written. Holds no plain PII. */
export interface LoginRow {
  userId: string;
  deviceType: string;
  maskedIp: string;
  maskedDeviceId: string;
  locale: string | null;
  appVersion: number;
  createDate: string; // YYYY-MM-DD, UTC
}

export function maskEvent(event: LoginEvent, sentAt: Date, p: Pseudonymizer): LoginRow {
  return {
    userId: event.userId,
    deviceType: event.deviceType,
    maskedIp: p.pseudonymize("ip", event.ip),
    maskedDeviceId: p.pseudonymize("device_id", event.deviceId),
    locale: event.locale,
    appVersion: event.appVersion,
    createDate: sentAt.toISOString().slice(0, 10),
  };
}
