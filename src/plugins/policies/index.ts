export { ipRulesPlugin } from './ip-rules';
export { corsPlugin } from './cors';
export { headerRulesPlugin } from './header-rules';
export { envelopePlugin } from './envelope';
export { deprecationPlugin } from './deprecation';
export { bodyLimitPlugin } from './body-limit';
