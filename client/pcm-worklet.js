// AudioWorklet: microphone samples at the context's rate → 16-bit PCM frames at TARGET_RATE.
//
// Each 128-sample render quantum is low-pass filtered and resampled (linear interpolation
// after a one-pole anti-alias filter; plenty for speech at 16 kHz), gathered into frames of
// FRAME_MS, converted to little-endian int16, and posted to the page with the frame's RMS
// level. The page sends each frame as one binary WebSocket message, so audio leaves at the
// pace the microphone delivers it: real time.

const TARGET_RATE = 16000;
const FRAME_MS = 20;
const FRAME_SAMPLES = (TARGET_RATE * FRAME_MS) / 1000;

class PcmFrames extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // fractional read position into the filtered input
    this.prev = 0; // last filtered sample of the previous quantum
    this.lp = 0; // one-pole low-pass state
    // Cut-off near 0.45 × the target rate (only when downsampling).
    const fc = Math.min(0.45 * TARGET_RATE, 0.45 * sampleRate);
    this.alpha = this.step > 1 ? 1 - Math.exp((-2 * Math.PI * fc) / sampleRate) : 1;
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    // Filtered copy of this quantum, with the previous quantum's last sample in front.
    const x = new Float32Array(channel.length + 1);
    x[0] = this.prev;
    for (let i = 0; i < channel.length; i++) {
      this.lp += this.alpha * (channel[i] - this.lp);
      x[i + 1] = this.lp;
    }
    this.prev = x[channel.length];
    // Output samples whose position falls inside this quantum.
    while (this.pos <= channel.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const v = x[i + 1] * (1 - frac) + (i + 2 <= channel.length ? x[i + 2] : x[i + 1]) * frac;
      const s = Math.max(-1, Math.min(1, v));
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      this.sumSquares += s * s;
      if (this.filled === FRAME_SAMPLES) {
        const rms = Math.sqrt(this.sumSquares / FRAME_SAMPLES);
        // Little-endian on every platform the page runs on; made explicit with a DataView.
        const buf = new ArrayBuffer(FRAME_SAMPLES * 2);
        const view = new DataView(buf);
        for (let k = 0; k < FRAME_SAMPLES; k++) view.setInt16(k * 2, this.frame[k], true);
        this.port.postMessage({ pcm: buf, rms }, [buf]);
        this.filled = 0;
        this.sumSquares = 0;
      }
      this.pos += this.step;
    }
    this.pos -= channel.length;
    return true;
  }
}

registerProcessor("pcm-frames", PcmFrames);
