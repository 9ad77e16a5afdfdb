// Greedy and beam search over the exported graphs in onnxruntime-web, one sentence at a time (its
// beams are the batch), and sampling from a character language model.
//
// The same steps and constants as the Python runtime's searches (seq2seq/portable/search.py),
// with the scores rounded to float32 as numpy keeps them, so the page translates as
// `seq2seq-translate model=SITE/model` does (tests/portable/test_web.py checks it in Chromium).

import { EOS_ID, FIRST_TEXT_ID } from "./pieces.js";

const BOS_ID = 2, PAD_ID = 0;
const f32 = Math.fround;

// Row indices of the n best values, best first; equal values keep the lower index first.
function topIndices(values, n) {
  const order = Array.from(values.keys());
  order.sort((a, b) => (values[b] > values[a] ? 1 : values[b] < values[a] ? -1 : a - b));
  return order.slice(0, n);
}

function int64(ort, values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

// Rows `index` of a (L, N, H) state: the beams that survive a step.
function takeRows(ort, tensor, index) {
  const [layers, rows, width] = tensor.dims;
  const out = new Float32Array(layers * index.length * width);
  for (let l = 0; l < layers; l++) {
    index.forEach((r, i) => out.set(tensor.data.subarray((l * rows + r) * width, (l * rows + r + 1) * width),
                                    (l * index.length + i) * width));
  }
  return new ort.Tensor("float32", out, [layers, index.length, width]);
}

function takeVectors(ort, tensor, index) {
  const [rows, width] = tensor.dims;
  const out = new Float32Array(index.length * width);
  index.forEach((r, i) => out.set(tensor.data.subarray(r * width, (r + 1) * width), i * width));
  return new ort.Tensor("float32", out, [index.length, width]);
}

function repeatRows(ort, tensor, times) {
  const size = tensor.data.length;
  const out = new tensor.data.constructor(size * times);
  for (let i = 0; i < times; i++) out.set(tensor.data, i * size);
  return new ort.Tensor(tensor.type, out, [times, ...tensor.dims.slice(1)]);
}

export function maxOutputLength(sourceLength, ratio, offset) {
  return Math.ceil(f32(f32(Math.max(sourceLength, 1)) * f32(ratio))) + offset;
}

export function lengthPenalty(length, alpha) {
  return ((5 + length) / 6) ** alpha;
}

export class Translation {
  constructor(ort, sessions, network, shortlist) {
    this.ort = ort;
    this.sessions = sessions;
    this.network = network;
    this.shortlist = shortlist; // {frequent, rows} or null
    this.fullLayer = null;
  }

  async layerFor(vocab) {
    const run = async (ids) => {
      const out = await this.sessions.output_layer.run({ vocab: int64(this.ort, ids, [ids.length]) });
      return [out.output_weight, out.output_bias];
    };
    if (vocab) return run(vocab);
    if (!this.fullLayer) this.fullLayer = await run(Array.from({ length: this.network.tgt_vocab_size }, (_, i) => i));
    return this.fullLayer;
  }

  // The union of the candidates of the sentence's pieces, the frequent ones and the special ones.
  vocabularyFor(ids) {
    if (!this.shortlist) return null;
    const chosen = new Set(this.shortlist.frequent);
    chosen.add(EOS_ID);
    for (const id of ids) for (const t of this.shortlist.rows[id] ?? []) chosen.add(t);
    return [...chosen].sort((a, b) => a - b);
  }

  async encode(ids, rows) {
    const ort = this.ort;
    const length = Math.max(ids.length, 1);
    const src = ids.length ? ids : [PAD_ID];
    const out = await this.sessions.encoder.run({ src: int64(ort, src, [1, length]),
                                                  src_lengths: int64(ort, [length], [1]) });
    const memory = {};
    if (this.network.attention !== "none") {
      memory.memory = repeatRows(ort, out.memory, rows);
      if (this.network.attention_keys) memory.keys = repeatRows(ort, out.keys, rows);
      // Every position is real in a single sentence (an empty one still has its one position).
      memory.mask = new ort.Tensor("bool", new Uint8Array(rows * length).fill(1), [rows, length]);
    }
    const spread = (t) => takeRows(ort, t, new Array(rows).fill(0));
    const state = { h: spread(out.h), c: spread(out.c) };
    if (this.network.input_feeding) {
      state.feed = new ort.Tensor("float32", new Float32Array(rows * this.network.output_size),
                                  [rows, this.network.output_size]);
    }
    return { memory, state, length };
  }

  // The `width` best pieces of each row: raw scores, ids (of the restricted vocabulary), the
  // normalizer, the new state. Rows at their length limit can only end.
  async stepTop(prev, state, memory, layer, vocab, width, atLimit) {
    const ort = this.ort;
    const tokens = vocab ? prev.map((t) => vocab[t]) : prev;
    const feeds = { tokens: int64(ort, tokens, [tokens.length]), h: state.h, c: state.c,
                    k: int64(ort, [width], [1]), output_weight: layer[0], output_bias: layer[1] };
    const fetches = ["log_norm", "top_scores", "top_tokens", "h_out", "c_out"];
    if (state.feed) {
      feeds.feed = state.feed;
      fetches.push("feed_out");
    }
    if (memory.memory) {
      feeds.memory = memory.memory;
      feeds.mask = memory.mask;
      if (memory.keys) feeds.keys = memory.keys;
    }
    const out = await this.sessions.decoder_step.run(feeds, fetches);
    const scores = Float32Array.from(out.top_scores.data);
    const ids = Array.from(out.top_tokens.data, Number);
    if (atLimit) {
      for (let r = 0; r < prev.length; r++) {
        scores.fill(-Infinity, r * width, (r + 1) * width);
        scores[r * width] = out.log_norm.data[r];
        ids[r * width] = EOS_ID;
      }
    }
    const next = { h: out.h_out, c: out.c_out };
    if (state.feed) next.feed = out.feed_out;
    return { scores, ids, logNorm: out.log_norm.data, state: next };
  }

  // One sentence (piece ids) -> [{tokens, score}], best first.
  async translate(ids, options, useShortlist) {
    const vocab = useShortlist ? this.vocabularyFor(ids) : null;
    const layer = await this.layerFor(vocab);
    const beam = options.beam;
    const hyps = beam === 1 && options.nbest === 1 ? await this.greedy(ids, options, layer, vocab)
      : await this.beamSearch(ids, options, layer, vocab);
    return vocab ? hyps.map((h) => ({ ...h, tokens: h.tokens.map((t) => vocab[t]) })) : hyps;
  }

  async greedy(ids, options, layer, vocab) {
    let { memory, state, length } = await this.encode(ids, 1);
    const limit = maxOutputLength(length, options.max_len_ratio, options.max_len_offset);
    let prev = [BOS_ID];
    const tokens = [];
    let score = 0;
    for (let t = 0; t < limit; t++) {
      const step = await this.stepTop(prev, state, memory, layer, vocab, 1, t === limit - 1);
      state = step.state;
      score += f32(step.scores[0] - step.logNorm[0]);
      if (step.ids[0] === EOS_ID) break;
      tokens.push(step.ids[0]);
      prev = [step.ids[0]];
    }
    return [{ tokens, score }];
  }

  async beamSearch(ids, options, layer, vocab) {
    const k = options.beam;
    let { memory, state, length } = await this.encode(ids, k);
    const limit = maxOutputLength(length, options.max_len_ratio, options.max_len_offset);
    const vocabularySize = vocab ? vocab.length : this.network.tgt_vocab_size;
    const width = Math.min(2 * k, vocabularySize);
    let scores = new Float32Array(k).fill(-Infinity);
    scores[0] = 0; // all beams start as the same BOS: only one is alive
    let history = Array.from({ length: k }, () => []);
    let prev = new Array(k).fill(BOS_ID);
    const finished = [];
    for (let t = 0; t < limit; t++) {
      const step = await this.stepTop(prev, state, memory, layer, vocab, width, t === limit - 1);
      const candidates = new Float32Array(k * width);
      for (let r = 0; r < k; r++) {
        for (let w = 0; w < width; w++) {
          const i = r * width + w;
          candidates[i] = f32(scores[r] + f32(step.scores[i] - step.logNorm[r]));
        }
      }
      const top = topIndices(candidates, Math.min(2 * k, k * width));
      const topScores = top.map((i) => candidates[i]);
      const topBeam = top.map((i) => Math.floor(i / width));
      const topToken = top.map((i) => step.ids[i]);
      const penalty = lengthPenalty(t + 1, options.length_penalty);
      for (let col = 0; col < k; col++) {
        if (topToken[col] === EOS_ID && topScores[col] > -Infinity && finished.length < k) {
          finished.push({ score: topScores[col] / penalty, tokens: history[topBeam[col]] });
        }
      }
      if (finished.length >= k) break;
      const masked = topScores.map((s, col) => (topToken[col] === EOS_ID ? -Infinity : s));
      const pick = topIndices(masked, k);
      const beams = pick.map((col) => topBeam[col]);
      state = { h: takeRows(this.ort, step.state.h, beams), c: takeRows(this.ort, step.state.c, beams) };
      if (step.state.feed) state.feed = takeVectors(this.ort, step.state.feed, beams);
      history = pick.map((col, i) => [...history[beams[i]], topToken[col]]);
      scores = Float32Array.from(pick, (col) => masked[col]);
      prev = pick.map((col) => topToken[col]);
    }
    finished.sort((a, b) => b.score - a.score);
    return finished.slice(0, options.nbest);
  }
}

// Temperature, then top-k and top-p (nucleus) restriction, then one draw, as the Python runtime's
// sample_tokens does (its random numbers differ; the distribution does not).
export function drawToken(logProbs, temperature, topK, topP, random = Math.random) {
  let logits = logProbs.map((x) => x / temperature);
  if (topK > 0 && topK < logits.length) {
    const kth = [...logits].sort((a, b) => b - a)[topK - 1];
    logits = logits.map((x) => (x < kth ? -Infinity : x));
  }
  const order = topIndices(logits, logits.length);
  const top = logits[order[0]];
  let probs = order.map((i) => Math.exp(logits[i] - top));
  let total = probs.reduce((a, b) => a + b, 0);
  if (topP < 1) {
    let mass = 0;
    probs = probs.map((p) => {
      const keep = mass < topP; // the first token always stays
      mass += p / total;
      return keep ? p : 0;
    });
    total = probs.reduce((a, b) => a + b, 0);
  }
  let u = random() * total;
  for (let j = 0; j < order.length; j++) {
    u -= probs[j];
    if (u < 0 && probs[j] > 0) return order[j];
  }
  return order[0];
}

export class LanguageModel {
  constructor(ort, session, network) {
    this.ort = ort;
    this.session = session;
    this.network = network;
  }

  async advance(token, state) {
    const out = await this.session.run({ tokens: int64(this.ort, [token], [1]), h: state.h, c: state.c });
    return { logits: out.logits.data, state: { h: out.h_out, c: out.c_out } };
  }

  // Yields one id at a time: the prompt read through the same step graph, then `maxChars` drawn
  // (or, greedy, the most probable) characters. The special ids are never drawn.
  async *generate(promptIds, { maxChars, temperature, topK = 0, topP = 1, greedy = false }) {
    const { layers, hidden_size: hidden } = this.network;
    const zeros = () => new this.ort.Tensor("float32", new Float32Array(layers * hidden), [layers, 1, hidden]);
    let state = { h: zeros(), c: zeros() };
    let logits;
    for (const token of promptIds) ({ logits, state } = await this.advance(token, state));
    for (let i = 0; i < maxChars; i++) {
      let top = -Infinity;
      for (let v = FIRST_TEXT_ID; v < logits.length; v++) top = Math.max(top, logits[v]);
      let sum = 0;
      for (let v = FIRST_TEXT_ID; v < logits.length; v++) sum += Math.exp(logits[v] - top);
      const logProbs = Array.from(logits, (x, v) => (v < FIRST_TEXT_ID ? -Infinity : x - top - Math.log(sum)));
      const token = greedy ? topIndices(logProbs, 1)[0] : drawToken(logProbs, temperature, topK, topP);
      yield token;
      ({ logits, state } = await this.advance(token, state));
    }
  }
}
