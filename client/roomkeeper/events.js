// Events: every client object is an EventTarget. Listeners get a CustomEvent whose `detail` is
// the payload; `on(type, fn)` is the short form, calling `fn(detail)` and answering a function
// that removes the listener. A handler registered with `on` that throws is reported with
// `console.error` and does not stop the client or the other handlers, in browsers and in Node
// alike (Node's EventTarget would otherwise turn it into an uncaught exception).

export class Emitter extends EventTarget {
  /** Calls `fn(detail)` for every `type` event; answers the function that stops it. */
  on(type, fn) {
    const listener = (e) => {
      try { fn(e.detail); } catch (err) { console.error(err); }
    };
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }
}

/** Dispatches `type` with `detail` on `target`. Module-private to the package: not exported
 *  from index.js, so only the client itself raises its events. */
export function emit(target, type, detail) {
  target.dispatchEvent(new CustomEvent(type, { detail }));
}
