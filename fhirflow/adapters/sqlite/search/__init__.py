"""The embedded search backend: typed value tables next to ``search_index`` (:mod:`.schema`),
filled with each indexed version (:mod:`.writer`, called by ``SqliteSearchIndex.apply``), and
queried by compiling the search AST to SQL (:mod:`.criteria`, :mod:`.conditions`,
:mod:`.compiler`) that :class:`.engine.SqliteSearchEngine` runs, ``_include``s included
(:mod:`.includes`).
"""
