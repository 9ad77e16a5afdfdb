"""seq2seq-export format=web: a static site that translates or generates in the browser, no server.

    export.py    the site: the ONNX export, the tokenizers as tables, the page, the runtime pieces
    runtime.py   onnxruntime-web, installed from the npm registry by package-lock.json (pinned, with
                 integrity hashes) into a cache once, and copied into each site
    site/        the page: index.html, page.js (the interface), pieces.js (SentencePiece),
                 search.js (greedy, beam search, shortlist, sampling), offline.js (the service worker)
"""
