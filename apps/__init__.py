"""The Streamlit demo (`edgepipe demo`): `Home.py` and its `pages/`, thin UIs over `edgepipe.runtime`."""
