"""The Streamlit analyst app: `streamlit run app/main.py` (see app/main.py)."""
