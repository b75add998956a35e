"""The app's frame as AppTest runs it for tests that click and type: `open_app()` in seed.py.

AppTest starts every run as a brand-new server would: it resets Streamlit's legacy-pages switch,
and because app/main.py sits next to app/pages/, each run of app/main.py itself begins in the
legacy multipage mode, where a page file runs alone and app.gate.require_access() reruns it into
the frame. That is the path tests/app/test_gate.py covers; but widget state does not survive a
rerun that begins elsewhere, so clicks and typed values would be lost between AppTest runs.
This file runs the same frame from a folder without a pages/ directory, which is how a real
server runs every session once one of them has called st.navigation. Nothing here is patched.

The guard matters: AppTest runs this file as `__main__`, and a later multiprocessing "spawn" in
the same pytest process (bench.gen_dataset's workers) re-imports the main module by path, as
`__mp_main__`, where the app must not run.
"""

from app.main import main

if __name__ == "__main__":
    main()
