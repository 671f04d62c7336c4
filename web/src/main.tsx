// The dashboard's entry: mounts the page (app.tsx) and its styles.
import { render } from 'preact';
import { App } from './app.js';
import './style.css';

render(<App />, document.getElementById('app')!);
