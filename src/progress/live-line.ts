/**
 * The one line at the bottom of a terminal that a progress bar redraws in place. Everything else written while it is
 * up (log lines, on stdout or stderr: the same terminal) goes through above(): the line is cleared, the text written,
 * the line drawn again below it, so no log line is ever glued onto the bar. Writes to a terminal are synchronous in
 * Node, so the order on screen is the order of the calls.
 */
export interface TerminalStream {
  write(text: string): unknown;
  columns?: number;
}

const CLEAR = "\r\x1b[K";

export class LiveLine {
  private text: string | undefined;
  private readonly stream: TerminalStream;

  constructor(stream: TerminalStream) {
    this.stream = stream;
  }

  get columns(): number {
    // A pseudo-terminal nobody sized (script, docker exec without -t size) reports 0 columns.
    return this.stream.columns || 80;
  }

  get active(): boolean {
    return this.text !== undefined;
  }

  draw(text: string): void {
    this.text = text;
    this.stream.write(`${CLEAR}${text}`);
  }

  above(write: () => void): void {
    if (this.text === undefined) return write();
    this.stream.write(CLEAR);
    write();
    this.stream.write(this.text);
  }

  /** Leaves the last drawing on screen and moves below it: what is written next starts on a line of its own. */
  end(): void {
    if (this.text === undefined) return;
    this.stream.write("\n");
    this.text = undefined;
  }
}

/** The live line of this process: the bar draws on stderr, and the logger writes above it. */
export const terminalLine = new LiveLine(process.stderr);

// A process that exits with a bar still up (a fatal error) must not leave the shell prompt on the bar's line.
process.once("exit", () => terminalLine.end());
