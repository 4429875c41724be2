/**
 * A terminal screen for tests: interprets what a program writes (text, "\r", "\n", ESC [ K) the way a terminal
 * does, so a test can assert what a person would see, line by line, instead of what bytes were sent.
 */
// eslint-disable-next-line no-control-regex
const SGR = /^\x1b\[[0-9;]*m/;

export class FakeTerminal {
  readonly isTTY = true;
  readonly columns: number;
  private readonly screen: string[] = [""];
  private col = 0;
  /** Every text that was on the cursor's line when a "\r" or "\n" arrived: each drawing of a redrawn line. */
  readonly drawings: string[] = [];

  constructor(columns = 100) {
    this.columns = columns;
  }

  write(chunk: string | Uint8Array): boolean {
    const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!;
      const row = this.screen.length - 1;
      if (c === "\r") {
        if (this.screen[row] !== "") this.drawings.push(this.screen[row]!);
        this.col = 0;
      } else if (c === "\n") {
        if (this.screen[row] !== "") this.drawings.push(this.screen[row]!);
        this.screen.push("");
        this.col = 0;
      } else if (c === "\x1b" && text.startsWith("\x1b[K", i)) {
        this.screen[row] = this.screen[row]!.slice(0, this.col);
        i += 2;
      } else if (c === "\x1b" && SGR.test(text.slice(i))) {
        i += SGR.exec(text.slice(i))![0].length - 1; // colours take no room
      } else {
        const line = this.screen[row]!.padEnd(this.col);
        this.screen[row] = line.slice(0, this.col) + c + line.slice(this.col + 1);
        this.col++;
      }
    }
    return true;
  }

  /** The screen's lines, without the empty one the cursor sits on after a final newline. */
  lines(): string[] {
    return this.screen.at(-1) === "" ? this.screen.slice(0, -1) : [...this.screen];
  }
}
