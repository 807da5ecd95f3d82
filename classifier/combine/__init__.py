"""Two opinions per pair: the LLM and the evidence encoder, combined field by field.

    provenance   what a combined label keeps: both proposals, who decided, the disagreement
    combiner     logistic stacking per field over both sides (fit, save with a card, load, apply)
    policy       when the LLM is asked at all ([label] llm = all | uncertain | relevant | none)

The backend is classifier/backends/combined.py (`--model combined`, the default).
"""
