// Text <-> SentencePiece ids in the browser, from the tables seq2seq-export format=web writes
// (tokenizer-<role>.json: each piece with its score and type, and the normalizer's settings).
//
// Unigram models take the most probable segmentation (Viterbi over the pieces' log-probabilities,
// Kudo 2018), BPE models merge the best-scored adjacent pair until none is in the vocabulary (the
// order SentencePiece's BPE trainer gave the merges), char and word models look pieces up.
// Normalization: nmt_nfkc is approximated by Unicode NFKC (SentencePiece's table adds rules for
// control characters and rare spaces); identity keeps the text as it is.

const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5;
export const UNK_ID = 1, EOS_ID = 3, FIRST_TEXT_ID = 4;
const SPACE = "\u2581";
// SentencePiece scores an unknown character this much below the least likely piece.
const UNKNOWN_PENALTY = 10;

export class Pieces {
  constructor(table) {
    this.modelType = table.model_type;
    this.normalization = table.normalization;
    this.addDummyPrefix = table.add_dummy_prefix;
    this.removeExtraWhitespaces = table.remove_extra_whitespaces;
    this.escapeWhitespaces = table.escape_whitespaces;
    this.pieces = table.pieces.map(([piece]) => piece);
    this.ids = new Map();
    this.scores = new Float64Array(table.pieces.length);
    this.userDefined = [];
    let minScore = Infinity, maxScore = -Infinity;
    table.pieces.forEach(([piece, score, type], id) => {
      if (type === NORMAL || type === USER_DEFINED) this.ids.set(piece, id);
      if (type === USER_DEFINED) this.userDefined.push(piece);
      if (type === NORMAL) {
        minScore = Math.min(minScore, score);
        maxScore = Math.max(maxScore, score);
      }
      this.scores[id] = score;
    });
    this.userDefinedIds = new Set(this.userDefined.map((piece) => this.ids.get(piece)));
    this.unknownScore = minScore - UNKNOWN_PENALTY;
    this.userDefinedScore = maxScore;
    this.maxPieceLength = Math.max(...this.pieces.map((p) => [...p].length));
    // What each id prints: the word boundary as a space, the special pieces as nothing.
    this.texts = this.pieces.map((p, id) => (id < FIRST_TEXT_ID ? "" : p.replaceAll(SPACE, " ")));
  }

  normalize(text) {
    if (this.normalization !== "identity") {
      // nmt_nfkc: NFKC, then tabs and line breaks as spaces, other control characters dropped.
      text = text.normalize("NFKC").replace(/[\t\n\r\v\f]/g, " ").replace(/[\u0000-\u001f\u007f]/g, "");
    }
    if (this.removeExtraWhitespaces) text = text.replace(/ +/g, " ").trim();
    if (!text) return "";
    if (this.addDummyPrefix) text = " " + text;
    return this.escapeWhitespaces ? text.replaceAll(" ", SPACE) : text;
  }

  encode(text) {
    const normalized = this.normalize(text);
    if (!normalized) return [];
    const chars = [...normalized];
    let ids;
    if (this.modelType === "unigram") ids = this.viterbi(chars);
    else if (this.modelType === "bpe") ids = this.mergePairs(chars);
    else if (this.modelType === "word") ids = this.words(normalized);
    else ids = this.withUserDefined(chars, (run) => run.map((c) => this.idOf(c)));
    // A run of unknown pieces is one unknown piece, as SentencePiece returns it.
    return ids.filter((id, i) => !(id === UNK_ID && ids[i - 1] === UNK_ID));
  }

  idOf(piece) {
    return this.ids.get(piece) ?? UNK_ID;
  }

  // The user-defined pieces (the newline of a verbatim model) are cut out first, longest match.
  withUserDefined(chars, encodeRun) {
    if (!this.userDefined.length) return encodeRun(chars);
    const ids = [];
    let run = [];
    for (let i = 0; i < chars.length;) {
      const match = this.userDefined.filter((p) => chars.slice(i, i + [...p].length).join("") === p)
        .sort((a, b) => b.length - a.length)[0];
      if (match === undefined) {
        run.push(chars[i++]);
        continue;
      }
      if (run.length) ids.push(...encodeRun(run));
      run = [];
      ids.push(this.ids.get(match));
      i += [...match].length;
    }
    if (run.length) ids.push(...encodeRun(run));
    return ids;
  }

  viterbi(chars) {
    const n = chars.length;
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1), via = new Int32Array(n + 1);
    best[0] = 0;
    for (let start = 0; start < n; start++) {
      if (best[start] === -Infinity) continue;
      let single = false;
      let piece = "";
      for (let end = start + 1; end <= Math.min(n, start + this.maxPieceLength); end++) {
        piece += chars[end - 1];
        const id = this.ids.get(piece);
        if (id === undefined) continue;
        if (end === start + 1) single = true;
        const length = end - start;
        const score = this.userDefinedIds.has(id) ? length * this.userDefinedScore - 0.1 : this.scores[id];
        if (best[start] + score > best[end]) {
          best[end] = best[start] + score;
          from[end] = start;
          via[end] = id;
        }
      }
      if (!single && best[start] + this.unknownScore > best[start + 1]) {
        best[start + 1] = best[start] + this.unknownScore;
        from[start + 1] = start;
        via[start + 1] = UNK_ID;
      }
    }
    const ids = [];
    for (let end = n; end > 0; end = from[end]) ids.push(via[end]);
    return ids.reverse();
  }

  mergePairs(chars) {
    return this.withUserDefined(chars, (run) => {
      const symbols = [...run];
      for (;;) {
        let bestAt = -1, bestScore = -Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const id = this.ids.get(symbols[i] + symbols[i + 1]);
          if (id !== undefined && this.scores[id] > bestScore) {
            bestScore = this.scores[id];
            bestAt = i;
          }
        }
        if (bestAt < 0) break;
        symbols.splice(bestAt, 2, symbols[bestAt] + symbols[bestAt + 1]);
      }
      return symbols.map((s) => this.idOf(s));
    });
  }

  words(normalized) {
    // Each piece starts at a word boundary: split before every boundary mark.
    return normalized.split(new RegExp(`(?=${SPACE})`, "u")).filter(Boolean).map((w) => this.idOf(w));
  }

  decode(ids) {
    const text = ids.filter((id) => id >= FIRST_TEXT_ID).map((id) => this.texts[id]).join("");
    // SentencePiece drops every leading boundary mark of a sentence (not only the dummy prefix).
    return this.addDummyPrefix || this.removeExtraWhitespaces ? text.replace(/^ +/, "") : text;
  }
}
